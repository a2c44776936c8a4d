"""Step caching for diffusers pipelines through diffusers' own cache hooks, and a count of the passes they skipped.

`pipeline.cache` turns on `transformer.enable_cache(...)` with a config diffusers 0.42 ships: first_block is
`FirstBlockCacheConfig` (the first block runs each pass; the others' cached residual is reused while its output's
relative change stays under the threshold), sea is `SeaCacheConfig` (Wan text-to-video, Cosmos 3). A transformer
diffusers cannot hook this way is refused by class. How many passes ran every block is read from the outside: a pass
whose last transformer block ran is a full one, any other reused the cache.
"""

from __future__ import annotations

from torch import nn

from vidgen.pipelines.options import StepCacheOptions


def _cache_config(options: StepCacheOptions):
    from diffusers import FirstBlockCacheConfig, SeaCacheConfig

    if options.kind == "first_block":
        return FirstBlockCacheConfig(threshold=options.threshold)
    return SeaCacheConfig(threshold=options.threshold)


def _last_block(transformer: nn.Module) -> nn.Module:
    """The last block of the transformer's block list, as diffusers' cache hooks find its blocks."""
    from diffusers.hooks._common import _ALL_TRANSFORMER_BLOCK_IDENTIFIERS

    for name, child in transformer.named_children():
        if name in _ALL_TRANSFORMER_BLOCK_IDENTIFIERS and isinstance(child, nn.ModuleList) and len(child):
            return child[-1]
    raise ValueError(f"pipeline.cache: {type(transformer).__name__} has no transformer block list diffusers' cache "
                     "hooks can find; drop pipeline.cache for this model")


class PassCounter:
    """Counts a transformer's passes, full (its last block ran) or skipped (a cache hook answered instead)."""

    def __init__(self, transformer: nn.Module):
        self.transformer = transformer
        self.full = self.skipped = 0
        self._ran = False
        transformer.register_forward_pre_hook(self._start)
        transformer.register_forward_hook(self._finish)
        for child in _last_block(transformer).children():  # a hook that skips the block skips its children too
            child.register_forward_hook(self._mark_ran)

    def _start(self, module, args) -> None:
        self._ran = False

    def _mark_ran(self, module, args, output) -> None:
        self._ran = True

    def _finish(self, module, args, output) -> None:
        if self._ran:
            self.full += 1
        else:
            self.skipped += 1

    def reset(self) -> None:
        """Zero the counts and forget the cache of an earlier call (diffusers resets it only when a call ends
        normally, not when one raises)."""
        self.full = self.skipped = 0
        self.transformer._reset_stateful_cache()

    def as_steps(self, steps: int) -> dict[str, float]:
        """The passes counted since `reset` as denoising steps: each pass is its share of a step (Wan runs its
        prompted and unprompted passes apart: two a step)."""
        passes = self.full + self.skipped
        per_step = passes / steps if passes else 1.0
        return {"full": round(self.full / per_step, 2), "skipped": round(self.skipped / per_step, 2)}


def enable_step_cache(pipe, options: StepCacheOptions) -> PassCounter:
    """Turn on the cache `options` name on the pipeline's transformer; a ValueError naming the transformer's class
    where diffusers cannot cache it."""
    transformer = getattr(pipe, "transformer", None)
    name = type(transformer).__name__ if transformer is not None else f"{type(pipe).__name__} (no transformer)"
    if not callable(getattr(transformer, "enable_cache", None)):
        raise ValueError(f"pipeline.cache: {name} does not support diffusers' cache hooks; drop pipeline.cache for "
                         "this model")
    try:
        transformer.enable_cache(_cache_config(options))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"pipeline.cache: {name} cannot take diffusers' {options.kind} cache ({e}); drop "
                         "pipeline.cache or try another kind") from None
    return PassCounter(transformer)

