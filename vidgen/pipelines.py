"""The plain functions behind `vidgen train`, `generate`, `eval` and `demo`; tests call these directly."""

from __future__ import annotations

import csv
import json
import logging
import platform
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidgen import synth
from vidgen.checkpoint import ModelFileError, load_model, read_config, save_model, write_sums
from vidgen.diffusion import GenerationOutput, sample
from vidgen.metrics import Detection, PromptAccuracy, detect, prompt_accuracy
from vidgen.model import ModelConfig, VideoDiT
from vidgen.perf import matmul_flops_per_s
from vidgen.report import contact_sheet_png, loss_curve_png
from vidgen.text import TextEncoder
from vidgen.training import SamplerConfig, TrainConfig, TrainResult, autocast_dtype, eval_specs, evaluate, train_local

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODELS = REPO_ROOT / "models"
DEFAULT_MODEL = "shapes-tiny"
SAMPLE_PROMPTS = (
    "a red square moving right",
    "a green circle moving down",
    "a blue triangle moving left",
    "a yellow square moving up",
    "a magenta circle moving left",
    "a cyan triangle moving right",
    "a red circle moving left",  # held-out composition
    "a blue triangle moving right",  # held-out composition
)


def resolve_model(ref: str | None) -> Path:
    """A model reference -> a verified local folder.

    A folder path; the name of a model shipped under models/ (default: the demo); or a registry reference
    (`NAME@v2`, `NAME@latest`, `s3://bucket/models/NAME@latest`), pulled into the local cache.
    """
    ref = ref or DEFAULT_MODEL
    path = Path(ref)
    if path.is_dir():
        return path
    if (SHIPPED_MODELS / ref).is_dir():
        return SHIPPED_MODELS / ref
    if "@" in ref or "://" in ref:
        from storage.registry import pull

        return pull(ref)
    shipped = sorted(p.name for p in SHIPPED_MODELS.glob("*") if p.is_dir())
    raise ModelFileError(f"model {ref!r} is neither a folder, a shipped model ({', '.join(shipped)}) nor a registry "
                         "reference such as NAME@latest")


def check_clip_shape(cfg: ModelConfig, frames: int | None, height: int | None, width: int | None) -> None:
    """Refuse clip shapes the model was not built for (its positional embeddings fix the token grid)."""
    for name, asked, native in (("frames", frames, cfg.frames), ("height", height, cfg.height),
                                ("width", width, cfg.width)):
        if asked is not None and asked != native:
            raise ValueError(f"{name}={asked} cannot be made by this model, which makes "
                             f"{cfg.frames}x{cfg.height}x{cfg.width} clips; leave {name} out or set it to {native}")


# --- train ---


def git_commit() -> str:
    """The short commit of this checkout (recorded in model cards), or 'unknown' outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _model_card(cfg: TrainConfig, result: TrainResult, final: dict, command: str, mfu: float) -> str:
    mcfg, commit = result.model.config, git_commit()
    curve = "\n".join(
        f"| {e['minutes']:.1f} | {e['step']} | {e['train']['all_three']:.2f} | {e['heldout']['all_three']:.2f} |"
        for e in result.evals
    ) or "| - | - | - | - |"
    return f"""---
pipeline_tag: text-to-video
library_name: vidgen
license: apache-2.0
datasets: [vidgen-builtin-{synth.GENERATOR_VERSION}]
model_preset: {cfg.preset}
params: {result.model.num_params()}
training_minutes: {result.minutes:.1f}
training_steps: {result.steps}
autoencoder_steps: {cfg.autoencoder_steps}
mfu: {mfu:.3f}
seed: {cfg.seed}
git_commit: {commit}
metrics:
  prompt_accuracy_seen: {final['seen']['all_three']:.3f}
  prompt_accuracy_heldout: {final['heldout']['all_three']:.3f}
  prompt_accuracy_paraphrase: {final['paraphrase']['all_three']:.3f}
---
# vidgen {cfg.preset} model

A text-to-video diffusion transformer ({result.model.num_params() / 1e6:.2f}M parameters) making
{mcfg.frames}x{mcfg.height}x{mcfg.width} clips of the built-in world (`vidgen/synth.py`, {synth.GENERATOR_VERSION}):
one of 6 colours x 3 shapes x 4 directions. The compositions in `vidgen.synth.HELD_OUT` were never seen in training.

## How it was made
```
{command}
```
{cfg.autoencoder_steps} autoencoder steps, then {result.steps} transformer steps, in {result.minutes:.1f} training
minutes (evaluation excluded) on {platform.machine()} with {torch.get_num_threads()} torch threads; seed {cfg.seed};
git commit {commit}. Autoencoder reconstruction MSE after its stage: {np.mean(result.autoencoder_losses[-20:]):.4f}.
Model FLOP utilisation of the transformer steps: {mfu:.3f} (against a 2048x2048 matmul
in the same dtype, measured in the same run).

## Prompt accuracy (all three of colour, shape and direction read back by `vidgen.metrics.detect`)
Final, {final['seen']['n']} clips per split, {cfg.sampler.steps} Euler steps, guidance {cfg.sampler.guidance}:

| split | colour | shape | direction | all three |
|---|---|---|---|---|
""" + "\n".join(
        f"| {split} | {m['colour']:.2f} | {m['shape']:.2f} | {m['direction']:.2f} | {m['all_three']:.2f} |"
        for split, m in final.items()
    ) + f"""

During training:

| minutes | step | seen | held-out |
|---|---|---|---|
{curve}

## Limits
It knows only the built-in world: a prompt about anything else gives a coloured shape anyway.
"""


def evaluate_all(model: VideoDiT, encoder: TextEncoder, sampler: SamplerConfig, clips: int, seed: int = 0,
                 dtype: torch.dtype | None = None) -> dict[str, dict]:
    """Prompt accuracy on new seeds of seen compositions, held-out compositions, and paraphrased prompts."""
    cfg = model.config
    splits = {
        "seen": eval_specs(cfg, "train", clips, seed),
        "heldout": eval_specs(cfg, "heldout", clips, seed),
        "paraphrase": eval_specs(cfg, "train", clips, seed, paraphrase=True),
    }
    return {name: evaluate(model, encoder, specs, sampler, dtype).to_dict() for name, specs in splits.items()}


def train_to_folder(cfg: TrainConfig, out: str | Path, encoder: TextEncoder | None = None,
                    final_eval_clips: int | None = None, on_step=None) -> dict:
    """Train locally, then write the model folder with its card, metrics CSV, loss curve and contact sheet."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = encoder or TextEncoder()
    dtype = autocast_dtype(cfg.precision)
    peak = matmul_flops_per_s(dtype)
    result = train_local(cfg, encoder, on_step)
    mfu = result.mfu(cfg.batch_size, peak)
    final = evaluate_all(result.model, encoder, cfg.sampler, final_eval_clips or cfg.eval_clips, dtype=dtype)
    command = "vidgen " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "train_to_folder()"
    save_model(result.model, out, card=_model_card(cfg, result, final, command, mfu),
               extra={"sampler": cfg.sampler.model_dump(), "train": cfg.model_dump(mode="json")},
               weights_dtype=getattr(torch, cfg.save_dtype))
    with open(out / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(result.history[0]))
        writer.writeheader()
        writer.writerows(result.history)
    (out / "evals.json").write_text(json.dumps({"during": result.evals, "final": final}, indent=2) + "\n")
    loss_curve_png(result.history, out / "loss_curve.png", result.evals)
    samples = generate(out, list(SAMPLE_PROMPTS), seeds=list(range(len(SAMPLE_PROMPTS))), encoder=encoder)
    contact_sheet_png(samples.frames, list(SAMPLE_PROMPTS), out / "samples.png")
    write_sums(out)  # again: the files above were added after save_model, whose folder `generate` had to verify
    last_loss = float(np.mean([h["loss"] for h in result.history[-20:]]))
    return {"out": str(out), "steps": result.steps, "minutes": result.minutes, "final": final, "mfu": mfu,
            "first_loss": result.history[0]["loss"], "last_loss": last_loss}


# --- generate and evaluate ---


def sampler_for(folder: Path, steps: int | None, guidance: float | None) -> SamplerConfig:
    """The model's saved sampler settings, with the caller's steps and guidance where given (validated)."""
    saved = SamplerConfig(**read_config(folder).get("sampler", {}))
    return SamplerConfig(steps=saved.steps if steps is None else steps,
                         guidance=saved.guidance if guidance is None else guidance)


@dataclass
class Generated:
    """Clips from `generate`, with what the detector reads from each."""

    frames: np.ndarray
    seeds: list[int]
    detections: list[Detection]
    timings: dict


def generate(model_ref: str | Path | None, prompts: list[str], seeds: list[int], steps: int | None = None,
             guidance: float | None = None, frames: int | None = None, height: int | None = None,
             width: int | None = None, encoder: TextEncoder | None = None, progress=None) -> Generated:
    """Generate one clip per prompt; sampler settings default to those saved with the model."""
    folder = resolve_model(str(model_ref) if model_ref is not None else None)
    model = load_model(folder)
    check_clip_shape(model.config, frames, height, width)
    sampler = sampler_for(folder, steps, guidance)
    encoder = encoder or TextEncoder()
    text = encoder.encode(prompts)
    out: GenerationOutput = sample(model, text, seeds, sampler.steps, sampler.guidance,
                                   autocast_dtype("auto"), progress)
    return Generated(out.frames, out.seeds, [detect(c) for c in out.frames], out.timings)


def evaluate_model(model_ref: str | None, clips: int = 96, seed: int = 0, steps: int | None = None,
                   guidance: float | None = None) -> dict:
    """Prompt accuracy of a saved model on seen, held-out and paraphrased prompts."""
    folder = resolve_model(model_ref)
    model = load_model(folder)
    sampler = sampler_for(folder, steps, guidance)
    result = evaluate_all(model, TextEncoder(), sampler, clips, seed, autocast_dtype("auto"))
    return {"model": str(folder), "clips_per_split": clips, "sampler": sampler.model_dump(), **result}


def accuracy_of(generated: Generated, prompts: list[str]) -> PromptAccuracy | None:
    """Score generated clips against prompts that name a colour, shape and direction of the world, if all do."""
    truths = [synth.parse_caption(p) for p in prompts]
    if any(t is None for t in truths):
        return None
    return prompt_accuracy(generated.frames, truths)
