"""The one choice of autocast precision, for training, evaluation, rendering and serving alike."""

from __future__ import annotations

import functools

import torch


def autocast_dtype(precision: str = "auto", device_type: str = "cpu") -> torch.dtype | None:
    """bf16 where asked for; for 'auto', bf16 on GPUs and on CPUs with native bf16 matmuls. None means fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16" or device_type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if _cpu_has_bf16() else None


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any("avx512_bf16" in line or "amx_bf16" in line for line in f if line.startswith("flags"))
    except OSError:
        return False
