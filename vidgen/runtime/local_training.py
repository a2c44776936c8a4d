"""`vidgen train` in one process: train on the built-in world, then write the model package and its artifacts."""

from __future__ import annotations

import json
import platform
import shlex
import sys
from pathlib import Path

import numpy as np
import torch

from vidgen import synth
from vidgen.evaluation import evaluate_splits
from vidgen.perf import matmul_flops_per_s
from vidgen.precision import autocast_dtype
from vidgen.runtime.artifacts import model_card, write_metrics_csv
from vidgen.runtime.eval_runs import SAMPLE_PROMPTS
from vidgen.runtime.packages import save_model, write_sums
from vidgen.runtime.pipeline import generate
from vidgen.runtime.plots import contact_sheet_png, loss_curve_png
from vidgen.text import TextEncoder
from vidgen.training import TrainConfig, train_local


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
    final = evaluate_splits(result.model, encoder, cfg.sampler, final_eval_clips or cfg.eval_clips, dtype=dtype)
    command = "vidgen " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "train_to_folder()"
    losses = [h["loss"] for h in result.history]
    metrics = {"first_loss": float(np.mean(losses[:10])), "final_loss": float(np.mean(losses[-10:])),
               "autoencoder_mse": float(np.mean(result.autoencoder_losses[-20:])), "mfu": mfu}
    lineage = {"dataset": f"vidgen-builtin-{synth.GENERATOR_VERSION} (generated on the fly)",
               "training_steps": result.steps, "training_minutes": round(result.minutes, 1),
               "autoencoder_steps": cfg.autoencoder_steps, "command": command}
    how_made = f"""```
{command}
```
{cfg.autoencoder_steps} autoencoder steps, then {result.steps} transformer steps, in {result.minutes:.1f} training
minutes (evaluation excluded) on {platform.machine()} with {torch.get_num_threads()} torch threads. Model FLOP
utilisation of the transformer steps: {mfu:.3f} (against a 2048x2048 matmul in the same dtype, measured in the
same run)."""
    save_model(result.model, out, card=model_card(result.model, cfg, lineage, metrics, final, how_made, result.evals),
               extra={"sampler": cfg.sampler.model_dump(), "train": cfg.model_dump(mode="json")},
               weights_dtype=getattr(torch, cfg.save_dtype))
    write_metrics_csv(result.history, out / "metrics.csv")
    (out / "evals.json").write_text(json.dumps({"during": result.evals, "final": final}, indent=2) + "\n")
    loss_curve_png(result.history, out / "loss_curve.png", result.evals)
    write_sums(out)  # `generate` verifies the folder, which lists every file
    samples = generate(out, list(SAMPLE_PROMPTS), seeds=list(range(len(SAMPLE_PROMPTS))), encoder=encoder)
    contact_sheet_png(samples.frames, list(SAMPLE_PROMPTS), out / "samples.png")
    write_sums(out)  # again, with samples.png
    last_loss = float(np.mean([h["loss"] for h in result.history[-20:]]))
    return {"out": str(out), "steps": result.steps, "minutes": result.minutes, "final": final, "mfu": mfu,
            "first_loss": result.history[0]["loss"], "last_loss": last_loss}
