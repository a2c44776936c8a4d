"""`vidgen train --workers N`: build the DistributedConfig from the CLI, run `jobs.train`, print where it went."""

from __future__ import annotations

import json

import typer

from vidgen.cli._common import fail


def train_distributed(preset_or_file: str, overrides: list[str], dry_run: bool, resume: str | None,
                      address: str | None, **job: object) -> None:
    """Start a new run (train config from the preset + overrides, job fields from the CLI) or resume one."""
    from jobs.train import TrainingError, load_run_config, run_training
    from jobs.train_config import DistributedConfig
    from storage.objectstore import StorageError
    from vidgen.config import ConfigError, apply_override, load_config
    from vidgen.training import TrainConfig

    try:
        if resume:
            cfg = load_run_config(str(job["runs"]), resume)
            train = cfg.train.model_dump(mode="json")
            for override in overrides:
                apply_override(train, override)
            cfg = cfg.model_copy(update={"train": TrainConfig.model_validate(train)})
        else:
            train = load_config(TrainConfig, preset_or_file, overrides)
            cfg = DistributedConfig(train=train, **{k: v for k, v in job.items() if v is not None})
    except (ConfigError, StorageError, ValueError) as err:
        fail(str(err).replace("\n", " "))
    if dry_run:
        typer.echo(json.dumps(cfg.model_dump(mode="json", exclude={"s3"}), indent=2))
        return
    if cfg.train.max_steps >= 10**6 and cfg.train.max_minutes is None:
        fail("set --steps or --minutes: the preset's max_steps is effectively unbounded")
    try:
        summary = run_training(cfg, address, resume)
    except (TrainingError, StorageError, ValueError) as err:
        fail(str(err))
    accuracy = (f"prompt accuracy seen {summary['prompt_accuracy_seen']:.2f}, held-out "
                f"{summary['prompt_accuracy_heldout']:.2f}" if "prompt_accuracy_seen" in summary else
                f"autoencoder reconstruction MSE {summary['autoencoder_mse']:.4f}")
    typer.echo(f"run {summary['run']}: {summary['steps']} steps, loss {summary['first_loss']:.3f} -> "
               f"{summary['final_loss']:.3f}; {accuracy}\n"
               f"checkpoints in {summary['run_dir']}/, model package (card, metrics.csv, loss_curve.png) in "
               f"{summary['package']}/")
