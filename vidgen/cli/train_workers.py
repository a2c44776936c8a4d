"""`vidgen train --workers N`: build the DistributedConfig from the CLI, run `jobs.train`, print where it went."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import typer

from vidgen.cli._common import fail


def train_distributed(source: str | Path, overrides: list[str], train_flags: Mapping[str, object], dry_run: bool,
                      resume: str | None, address: str | None, **job: object) -> None:
    """Start a new run (its TrainConfig from the preset or file, `--set` and the train flags; the job's fields from
    the CLI) or resume one (its saved TrainConfig, with the same `--set` and train flags on top)."""
    from jobs.train import load_run_config, run_training
    from jobs.train_config import DistributedConfig
    from vidgen.config import load_config
    from vidgen.training import TrainConfig

    if resume:
        saved = load_run_config(str(job["runs"]), resume)
        train = load_config(TrainConfig, saved.train.model_dump(mode="json"), overrides, train_flags)
        cfg = saved.model_copy(update={"train": train})
    else:
        train = load_config(TrainConfig, source, overrides, train_flags)
        cfg = load_config(DistributedConfig, {"train": train}, flags=job)
    if dry_run:
        typer.echo(json.dumps(cfg.model_dump(mode="json", exclude={"s3"}), indent=2))
        return
    if cfg.train.max_steps >= 10**6 and cfg.train.max_minutes is None:
        fail("set --steps or --minutes: the preset's max_steps is effectively unbounded")
    summary = run_training(cfg, address, resume)
    accuracy = (f"prompt accuracy seen {summary['prompt_accuracy_seen']:.2f}, held-out "
                f"{summary['prompt_accuracy_heldout']:.2f}" if "prompt_accuracy_seen" in summary else
                f"autoencoder reconstruction MSE {summary['autoencoder_mse']:.4f}")
    typer.echo(f"run {summary['run']}: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
               f"{summary['final_loss']:.3f}; {accuracy}\n"
               f"checkpoints in {summary['run_dir']}/, model package (card, metrics.csv, loss_curve.png) in "
               f"{summary['package']}/")
