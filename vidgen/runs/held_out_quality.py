"""Quality of a diffusers model (an adapter fused in or not) on a data set's held-out clips: what the promotion gate
compares for models outside the built-in world, whose prompt accuracy means nothing.

Three numbers, all on the same clips, noise and seeds for every model compared:
- `val_loss`: the fine-tuning objective's validation loss (`finetune_objective.validation_loss`: fixed noise levels,
  seeded noise) on the held-out clips and captions, encoded by the model's own VAE and text encoder: how well it
  denoises footage like the data set's;
- `fd_frames`: the Fréchet distance between frame features (efficientnet-lite0) of clips rendered from the held-out
  captions and of the held-out clips themselves: how much its clips look like the footage;
- `subject_consistency` and `flicker` of those renders (VBench's temporal consistency), beside the held-out clips'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.metrics import temporal_consistency
from vidgen.perceptual import frame_features, frechet_distance, subject_consistency
from vidgen.runs.finetune_objective import objective_of, validation_loss
from vidgen.runs.finetune_precompute import Clip, fit_clip, fitted_shape
from vidgen.runs.finetune_recipes import encode_clips, encode_text

QUALITY_MEASURES = ("val_loss", "fd_frames")  # lower is better; what a gate compares


def held_out_quality(pipeline, clips: Sequence[Clip], frame_network: torch.nn.Module, seed: int = 0,
                     steps: int | None = None) -> dict:
    """The model's quality on `clips` (uint8 held-out clips with captions). Every clip is fitted to the shape the
    model makes nearest to the smallest clip's; captions the model cannot read are refused by name."""
    if len(clips) < 2:
        raise ValueError(f"held-out quality needs at least 2 held-out clips, the data set has {len(clips)}: ingest "
                         "more sources or a larger --eval-fraction")
    pipe = pipeline.pipe
    captions = [c.caption for c in clips]
    _, refused = pipeline.encode(captions)
    if refused:
        first = next(iter(refused))
        raise ValueError(f"held-out caption {captions[first]!r} cannot be read by {pipeline.label}: "
                         f"{refused[first]}")
    shape = min(fitted_shape(pipe, c.frames.shape[:3]) for c in clips)
    reference = np.stack([fit_clip(c.frames, shape, f"clip {c.key}") for c in clips])
    with torch.inference_mode():
        latents = encode_clips(pipe, torch.from_numpy(reference))
        text = encode_text(pipe, captions)
    loss = validation_loss(objective_of(pipe), pipe.transformer, latents, text, seed=seed)
    frames, height, width = shape
    resolved = []
    for i, caption in enumerate(captions):
        clip, problems = resolve_clip(ClipRequest(prompt=caption, seed=seed + i, frames=frames, height=height,
                                                  width=width, steps=steps), pipeline.capabilities)
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.reason}" for p in problems))
        resolved.append(clip)
    generated = pipeline.generate(resolved).frames
    made, real = frame_features(frame_network, generated), frame_features(frame_network, reference)
    return {
        "val_loss": round(loss, 6),
        "fd_frames": round(frechet_distance(made.reshape(-1, made.shape[-1]), real.reshape(-1, real.shape[-1])), 4),
        "subject_consistency": round(float(np.mean([subject_consistency(f) for f in made])), 4),
        "subject_consistency_reference": round(float(np.mean([subject_consistency(f) for f in real])), 4),
        "flicker": round(float(np.mean([temporal_consistency(c) for c in generated])), 4),
        "flicker_reference": round(float(np.mean([temporal_consistency(c) for c in reference])), 4),
        "clips": len(clips), "clip_shape": list(shape),
    }
