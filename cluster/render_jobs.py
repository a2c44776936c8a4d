"""A request on a tier replica's sampler: its clip, its LoRA adapter, the steps sampled so far, and a cancel flag
checked between steps.

The replica samples the clips of a batch that share their settings and their adapter in one sampler call
(`cluster.tier_replica`, grouped by `RenderJob.sampler_group`), so a request cannot leave its call alone: the sampler
stops at its next step only when every request of the call has been cancelled (`SamplingCancelled`); a request
cancelled beside one still wanted is sampled to the end with it and its clip dropped, so its batch-mates are unharmed.
Both backends call the progress callback after each denoising step (vidgen's `diffusion.sample`, diffusers'
`callback_on_step_end`), which is where the flag is read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vidgen.clip_request import ResolvedClip
from vidgen.pipelines.adapters import slot_name
from vidgen.pipelines.references import VerifiedModel


class SamplingCancelled(Exception):
    """Every request of a sampler call was cancelled; the sampler stopped after `step` steps."""

    def __init__(self, step: int):
        super().__init__(f"cancelled after {step} sampler steps")
        self.step = step


@dataclass(eq=False)  # two requests for the same clip are two jobs
class RenderJob:
    clip: ResolvedClip
    on_step: Callable[[int], None] | None = None  # called on the sampler thread after each step
    cancelled: threading.Event = field(default_factory=threading.Event)
    step: int = 0
    adapter: VerifiedModel | None = None  # the LoRA adapter it renders with (checked against the base already)

    @property
    def sampler_group(self) -> tuple:
        """What jobs sampled in one call share: their settings and their adapter."""
        return self.clip.settings, slot_name(self.adapter) if self.adapter is not None else None


def sampler_progress(jobs: Sequence[RenderJob], counted: Callable[[], None] | None = None) -> Callable[[int], None]:
    """The progress callback of one sampler call for `jobs`: each hears of step i, `counted()` counts the step, and
    once every job is cancelled the sampler is stopped with SamplingCancelled."""
    def progress(step: int) -> None:
        if counted is not None:
            counted()
        for job in jobs:
            job.step = step
            if job.on_step is not None:
                job.on_step(step)
        if all(job.cancelled.is_set() for job in jobs):
            raise SamplingCancelled(step)

    return progress
