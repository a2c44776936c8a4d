"""The one precision rule, for training, evaluation, rendering and serving, with vidgen's and diffusers' models alike.

One vocabulary (torch's dtype names) and one `auto`: bfloat16 on GPUs and on CPUs with native bf16 matmuls
(AVX512-BF16/AMX), float32 elsewhere. vidgen models keep float32 weights and run under autocast to the chosen dtype
(`autocast`); diffusers pipelines load their weights in it. torch is imported lazily, so configs that name a
precision load without it.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Literal

Precision = Literal["auto", "float32", "bfloat16", "float16"]


def compute_dtype(precision: Precision = "auto", device_type: str = "cpu"):
    """The torch dtype a model computes in on this device."""
    import torch

    if precision != "auto":
        return getattr(torch, precision)
    return torch.bfloat16 if device_type == "cuda" or (device_type == "cpu" and _cpu_has_bf16()) else torch.float32


def dtype_name(precision: Precision = "auto", device_type: str = "cpu") -> str:
    """`compute_dtype` by its name (`float32`, `bfloat16`, ...), as configs and capabilities spell it."""
    return str(compute_dtype(precision, device_type)).removeprefix("torch.")


def autocast_dtype(precision: Precision = "auto", device_type: str = "cpu"):
    """`compute_dtype` as vidgen's samplers and trainers take it: None means plain float32 (no autocast)."""
    import torch

    dtype = compute_dtype(precision, device_type)
    return None if dtype == torch.float32 else dtype


def autocast(dtype, device_type: str = "cpu"):
    """Autocast to `dtype` on the device, or nothing when `dtype` is None (float32)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any("avx512_bf16" in line or "amx_bf16" in line for line in f if line.startswith("flags"))
    except OSError:
        return False
