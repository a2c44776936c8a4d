"""Hardware yardsticks for MFU: the FLOP/s a large matmul reaches here, in the dtype training uses."""

from __future__ import annotations

import time

import torch


def matmul_flops_per_s(dtype: torch.dtype | None, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n x n matmul in `dtype` (None: fp32) on this machine, best of `repeats`."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    if dtype is not None:
        a, b = a.to(dtype), b.to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def model_flops_utilisation(train_flops_per_clip: float, clips: int, seconds: float, peak: float) -> float:
    """Achieved model FLOP/s (training FLOPs per clip x clips / seconds) over the measured peak."""
    return train_flops_per_clip * clips / seconds / peak


def accelerator_memory(device: torch.device) -> dict:
    """Peak accelerator memory this process has allocated so far, in GiB, as a metrics field ({} on a CPU)."""
    if device.type != "cuda":
        return {}
    return {"gpu_peak_gib": torch.cuda.max_memory_allocated(device) / 2**30}
