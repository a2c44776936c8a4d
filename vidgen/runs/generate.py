"""One clip per prompt from a model reference: what `vidgen generate`, `vidgen demo` and a training run's samples
use. Bulk render and serving load a pipeline once and keep it; this loads one for a single call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from vidgen.clip_request import ClipRequest, field_problems, resolve_clip
from vidgen.metrics import Detection, detect
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions
from vidgen.runs.cards import trained_on_builtin_world
from vidgen.text import TextEncoder


@dataclass
class Generated:
    """Clips from `generate`, with what the detector of the built-in world reads from each (vidgen models of that
    world only: a diffusers model's clips, or those of a model of one's own videos, are not of it)."""

    frames: np.ndarray
    seeds: list[int]
    detections: list[Detection]
    timings: dict
    label: str = ""
    cached_steps: list[dict[str, float]] | None = None  # per clip, with step caching: steps in full and skipped


def generate(model_ref: str | Path | None, prompts: list[str], seeds: list[int], steps: int | None = None,
             guidance: float | None = None, frames: int | None = None, height: int | None = None,
             width: int | None = None, encoder: TextEncoder | None = None, progress=None,
             negative_prompt: str | None = None, options: PipelineOptions | None = None,
             on_steps: Callable[[int], None] | None = None) -> Generated:
    """One clip per prompt; unset settings take the model's. A request the model cannot make is a ValueError naming
    the field. `on_steps(n)`: the sampler steps the clips take, once known (before `progress` counts them)."""
    pipeline = load_pipeline(model_ref, encoder, options=options)
    resolved = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        try:
            request = ClipRequest(prompt=prompt, seed=seed, frames=frames, height=height, width=width, steps=steps,
                                  guidance=guidance, negative_prompt=negative_prompt)
            clip, problems = resolve_clip(request, pipeline.capabilities)
        except ValidationError as e:
            clip, problems = None, field_problems(e)
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.reason}" for p in problems))
        resolved.append(clip)
    if on_steps:
        on_steps(resolved[0].steps)
    out = pipeline.generate(resolved, progress=progress)
    of_the_world = pipeline.backend == "vidgen" and trained_on_builtin_world(pipeline.folder)
    detections = [detect(c) for c in out.frames] if of_the_world else []
    return Generated(out.frames, out.seeds, detections, out.timings, pipeline.label, out.cached_steps)
