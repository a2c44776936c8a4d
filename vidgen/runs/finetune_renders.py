"""Validation renders of a fine-tuning run: a few fixed prompts and seeds rendered with the weights of each kept
checkpoint, so a person sees what the numbers in metrics.csv mean.

Rendered once training has ended (by the driver, from the checkpoints Ray Train kept), never between steps: the
steps after a validation are not slowed by it. One pipeline is loaded; each checkpoint's trainable weights are put
into its transformer in turn (the LoRA layers added once), so a run of N checkpoints loads the model once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from storage.video import encode
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.runs.finetune_lora import LoraSettings, add_lora
from vidgen.runs.finetune_recipes import recipe_for
from vidgen.runs.plots import contact_sheet_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationPlan:
    """What to render at every checkpoint: prompts x seeds at one shape, at the given steps (None: the model's)."""

    prompts: list[str]
    seeds: list[int]
    shape: tuple[int, int, int]
    steps: int | None = None


def render_checkpoints(pipeline, lora: LoraSettings | None, checkpoints: Iterable[tuple[int, dict[str, torch.Tensor]]],
                       plan: ValidationPlan, folder: Path, load_trainable) -> list[dict]:
    """Render `plan` with each (step, trainable weights) into FOLDER/stepNNNNNNNN/pI-sSEED.mp4 and one
    FOLDER/preview.png (a row per checkpoint and clip, its frames left to right); returns a record per clip.

    `pipeline`: a loaded DiffusersPipeline of the base model; `lora`: the run's adapter settings (None for full
    fine-tuning); `load_trainable(transformer, weights, where)` puts a checkpoint's weights in."""
    transformer = pipeline.pipe.transformer
    if lora is not None:
        add_lora(transformer, recipe_for(pipeline.pipeline_class), lora)
    frames, height, width = plan.shape
    _, refused = pipeline.encode(plan.prompts)
    for i, reason in refused.items():
        log.warning("validation prompt %r is not rendered: %s", plan.prompts[i], reason)
    clips, records, rows, captions = [], [], [], []
    for prompt in (p for i, p in enumerate(plan.prompts) if i not in refused):
        for seed in plan.seeds:
            clip, problems = resolve_clip(ClipRequest(prompt=prompt, seed=seed, frames=frames, height=height,
                                                      width=width, steps=plan.steps), pipeline.capabilities)
            if problems:
                reasons = "; ".join(f"{p.field}: {p.reason}" for p in problems)
                raise ValueError(f"validation clip {prompt!r}: {reasons}")
            clips.append(clip)
    for step, weights in checkpoints if clips else ():
        # copied into the loaded dtypes (bf16 weights, the modules diffusers keeps in float32 kept so), as the
        # pipeline would load a package of these weights: casting the whole transformer would not keep them
        load_trainable(transformer, weights, f"checkpoint of step {step}")
        out = pipeline.generate(clips).frames
        where = folder / f"step{step:08d}"
        where.mkdir(parents=True, exist_ok=True)
        for i, (clip, video) in enumerate(zip(clips, out, strict=True)):
            name = where / f"p{i // len(plan.seeds)}-s{clip.seed}.mp4"
            name.write_bytes(encode(video))
            records.append({"step": step, "prompt": clip.prompt, "seed": clip.seed, "video": str(name)})
            rows.append(video)
            captions.append(f"step {step}: {clip.prompt} (seed {clip.seed})")
    if rows:
        contact_sheet_png(np.stack(rows), captions, folder / "preview.png")
    return records
