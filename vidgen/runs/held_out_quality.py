"""Quality of a diffusers model (an adapter fused in or not) on a data set's held-out clips: what the promotion gate
compares for models outside the built-in world, whose prompt accuracy means nothing.

Three numbers, all on the same clips, noise and seeds for every model compared:
- `val_loss`: the fine-tuning objective's validation loss (`finetune_objective.validation_loss`: fixed noise levels,
  seeded noise) on the held-out clips and captions, encoded by the model's own VAE and text encoder: how well it
  denoises footage like the data set's;
- `fd_frames`: the Fréchet distance between frame features (efficientnet-lite0) of clips rendered from the held-out
  captions and of the held-out clips themselves: how much its clips look like the footage;
- `subject_consistency` and `flicker` of those renders (VBench's temporal consistency), beside the held-out clips'.

Clips are encoded and rendered `BATCH_CLIPS` at a time (a real model's VAE does not take 32 clips at once), and
`on_clips(n)` is told after each batch: every clip is counted twice, once encoded, once rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from storage.datasets import EVAL_SPLIT, open_dataset
from storage.objectstore import ObjectStore
from storage.shards import VerifiedSample, verified_samples
from storage.video import decode
from vidgen.clip_request import ClipRequest, ResolvedClip, resolve_clip
from vidgen.metrics import temporal_consistency
from vidgen.perceptual import frame_features, frechet_distance, subject_consistency
from vidgen.runs.finetune_objective import objective_of, validation_loss
from vidgen.runs.finetune_precompute import Clip, fit_clip, fitted_shape
from vidgen.runs.finetune_recipes import encode_clips, encode_text

QUALITY_MEASURES = ("val_loss", "fd_frames")  # lower is better; what a gate compares
CONSISTENCY_MEASURES = ("subject_consistency", "flicker")  # higher is better (1: a still clip)
BATCH_CLIPS = 4  # clips encoded or rendered at once, as the fine-tuning precompute encodes them

# called with the number of clips a batch just encoded or rendered, so a caller can show progress
ClipsDone = Callable[[int], None]


def held_out_clips(data_uri: str, limit: int, store: ObjectStore | None = None) -> list[Clip]:
    """The first `limit` clips of the data set's eval split (index order, so every model sees the same ones), each
    checked against the index; a clip that fails its check is skipped. ValueError naming --data when fewer than 2."""
    store = store or ObjectStore()
    dataset = open_dataset(store, data_uri)
    clips: list[Clip] = []
    for shard in dataset.shards((EVAL_SPLIT,)):
        for sample in verified_samples(store.read(dataset.shard_uri(shard)), shard):
            if len(clips) == limit:
                return clips
            if isinstance(sample, VerifiedSample):
                clips.append(Clip(sample.key, str(sample.meta.get("caption", "")), EVAL_SPLIT, decode(sample.mp4)))
    if len(clips) < 2:
        raise ValueError(f"--data {data_uri}: its eval split holds {len(clips)} usable clips, the gate needs at least "
                         "2: ingest it again with more sources or a larger --eval-fraction")
    return clips


def held_out_quality(pipeline, clips: Sequence[Clip], frame_network: torch.nn.Module, seed: int = 0,
                     steps: int | None = None, max_shape: tuple[int, int, int] | None = None,
                     on_clips: ClipsDone | None = None) -> dict:
    """The model's quality on `clips` (uint8 held-out clips with captions). Every clip is fitted to the shape the
    model makes nearest to the smallest clip's (capped at `max_shape`); captions the model cannot read are refused
    by name. Seconds per clip are the sampler's own."""
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
    shape = min(fitted_shape(pipe, c.frames.shape[:3], max_shape) for c in clips)
    reference = np.stack([fit_clip(c.frames, shape, f"clip {c.key}") for c in clips])
    rendered = [_resolved(pipeline, caption, seed + i, shape, steps) for i, caption in enumerate(captions)]
    done = on_clips or (lambda n: None)
    loss = _validation_loss(pipe, reference, captions, seed, done)
    generated, seconds = [], 0.0
    for start in range(0, len(rendered), BATCH_CLIPS):
        out = pipeline.generate(rendered[start:start + BATCH_CLIPS])
        generated.append(out.frames)
        seconds += out.timings["sample_s"]
        done(len(out.seeds))
    generated = np.concatenate(generated)
    made, real = frame_features(frame_network, generated), frame_features(frame_network, reference)
    return {
        "val_loss": round(loss, 6),
        "fd_frames": round(frechet_distance(made.reshape(-1, made.shape[-1]), real.reshape(-1, real.shape[-1])), 4),
        "subject_consistency": round(float(np.mean([subject_consistency(f) for f in made])), 4),
        "subject_consistency_reference": round(float(np.mean([subject_consistency(f) for f in real])), 4),
        "flicker": round(float(np.mean([temporal_consistency(c) for c in generated])), 4),
        "flicker_reference": round(float(np.mean([temporal_consistency(c) for c in reference])), 4),
        "clips": len(clips), "clip_shape": list(shape), "steps": rendered[0].steps,
        "seconds_per_clip": round(seconds / len(clips), 4),
    }


def _validation_loss(pipe, reference: np.ndarray, captions: list[str], seed: int, done: Callable[[int], None]) -> float:
    """The mean validation loss over all clips, `BATCH_CLIPS` at a time; batch k's noise is drawn from seed + k, so
    the number does not depend on anything but the clips, the seed and the weights."""
    objective, total = objective_of(pipe), 0.0
    for k, start in enumerate(range(0, len(reference), BATCH_CLIPS)):
        batch = reference[start:start + BATCH_CLIPS]
        with torch.inference_mode():
            latents = encode_clips(pipe, torch.from_numpy(batch))
            text = encode_text(pipe, captions[start:start + BATCH_CLIPS])
        total += validation_loss(objective, pipe.transformer, latents, text, seed=seed + k) * len(batch)
        done(len(batch))
    return total / len(reference)


def _resolved(pipeline, caption: str, seed: int, shape: tuple[int, int, int], steps: int | None) -> ResolvedClip:
    frames, height, width = shape
    clip, problems = resolve_clip(ClipRequest(prompt=caption, seed=seed, frames=frames, height=height, width=width,
                                              steps=steps), pipeline.capabilities)
    if problems:
        raise ValueError("; ".join(f"{p.field}: {p.reason}" for p in problems))
    return clip
