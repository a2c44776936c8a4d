"""First-block cache for VideoDiT: skip the blocks after the first while the first block's output barely moves.

Consecutive denoising steps change a DiT's internal features little. Each step runs the first block; when its
residual (output - input) differs from the residual of the last fully computed step by less than `threshold`
(relative mean absolute change), the remaining blocks are not run and their cached residual from that step is added
instead. This is First-Block Cache (ParaAttention; diffusers' `FirstBlockCacheConfig` for diffusers pipelines),
written for `vidgen.model.VideoDiT`. Guided sampling batches the prompted and null-prompt passes, so one decision is
taken per step for the whole batch. One cache follows one trajectory: make a new one per `sample` call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class FirstBlockCache:
    """State of one sampling trajectory: the last full step's residuals, and how many steps ran in full or skipped."""

    def __init__(self, threshold: float):
        if threshold < 0:
            raise ValueError(f"cache threshold must be >= 0, got {threshold}")
        self.threshold = threshold
        self.full = 0
        self.skipped = 0
        self._first_residual: torch.Tensor | None = None  # first block's residual at the last full step
        self._rest_residual: torch.Tensor | None = None  # what the other blocks added at that step

    def relative_change(self, first_residual: torch.Tensor) -> float:
        """Mean absolute change of the first block's residual since the last full step, relative to its size then
        (infinite before the first full step)."""
        if self._first_residual is None:
            return float("inf")
        change = (first_residual - self._first_residual).abs().mean()
        return float(change / self._first_residual.abs().mean().clamp(min=1e-12))

    def run(self, blocks: Sequence[nn.Module], tokens: torch.Tensor, *args) -> torch.Tensor:
        """`tokens` (B, N, D) through `blocks` (each called as block(tokens, *args)), or through the first only
        with the cached residual of the rest added. Returns (B, N, D)."""
        first = blocks[0](tokens, *args)
        first_residual = first - tokens
        if self.relative_change(first_residual) < self.threshold:
            self.skipped += 1
            return first + self._rest_residual
        out = first
        for block in blocks[1:]:
            out = block(out, *args)
        self._first_residual, self._rest_residual = first_residual, out - first
        self.full += 1
        return out
