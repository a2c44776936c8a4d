"""`vidgen finetune`: fine-tune a diffusers pipeline on a data set with Ray Train + DeepSpeed (`jobs.finetune`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import CONFIG_PRECEDENCE, SetOption, one_line_errors, setup_logging


@one_line_errors(ValueError)
def finetune(
    model: Annotated[str | None, typer.Option(help="the diffusers pipeline to fine-tune (Wan, LTX-Video or "
                                                   "CogVideoX): a folder, NAME@vN or NAME@ALIAS")] = None,
    data: Annotated[str | None, typer.Option(help="a data set from `vidgen data ingest` or `prepare` (folder or "
                                                  "s3://…): its train split trains, its eval split validates")] =
        None,
    out: Annotated[str | None, typer.Option(help="where the result goes (folder or s3://…); default "
                                                 "RUNS/NAME/adapter, or RUNS/NAME/model with --full")] = None,
    lora_rank: Annotated[int | None, typer.Option(help="LoRA rank (default 16): trains an adapter on the frozen "
                                                       "transformer's attention projections")] = None,
    full: Annotated[bool, typer.Option(help="train every transformer weight instead of an adapter")] = False,
    workers: Annotated[int | None, typer.Option(help="Ray Train workers, one DeepSpeed rank each (default 2)")] =
        None,
    zero: Annotated[int | None, typer.Option(help="ZeRO stage 0-3 (default 2; 3 shards the weights too)")] = None,
    offload: Annotated[bool | None, typer.Option(help="optimizer states in CPU memory (ZeRO-Offload)")] = None,
    steps: Annotated[int | None, typer.Option(help="optimizer steps (default 200)")] = None,
    gpu: Annotated[bool | None, typer.Option(help="one GPU per worker (NCCL, bf16)")] = None,
    runs: Annotated[str | None, typer.Option(help="where runs keep checkpoints and metrics (default runs)")] = None,
    push: Annotated[str | None, typer.Option(help="also push the result to this registry model (NAME or "
                                                  "s3://BUCKET/models/NAME)")] = None,
    config: Annotated[Path | None, typer.Option(help="a FinetuneConfig YAML (see jobs/finetune_config.py) for the "
                                                     f"rest; {CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    resume: Annotated[str | None, typer.Option(help="continue the run of this name under --runs from its last "
                                                    "checkpoint, on any number of workers (its saved config; "
                                                    "--steps may extend it)")] = None,
    dry_run: Annotated[bool, typer.Option(help="validate the config, print it and exit")] = False,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto); default: start one")] =
        None,
) -> None:
    """Fine-tune a pretrained diffusers video model on your own clips: a LoRA adapter (default) or every weight.

    Latents are precomputed once (a Ray Data stage) and cached for later runs; training runs on Ray Train with
    DeepSpeed ZeRO, validating on held-out latents every validate_every steps; checkpoints in RUNS/NAME survive a
    lost worker and resume on another number of workers. The result is an adapter package (diffusers' LoRA format,
    loadable with `pipe.load_lora_weights(folder)`) or a whole pipeline folder, with card and SHA256SUMS.

    Example: vidgen finetune --model my-wan@v1 --data data/mine --lora-rank 16 --workers 2 --steps 500 --push mine-lora
    Then: vidgen render prompts.jsonl --model my-wan@v1 --lora mine-lora@latest
    """
    setup_logging()
    from jobs.finetune import load_finetune_config, run_finetune
    from jobs.finetune_config import FinetuneConfig
    from vidgen.config import load_config

    flags = {"model": model, "data": data, "out": out, "lora.rank": lora_rank, "method": "full" if full else None,
             "workers": workers, "zero_stage": zero, "offload_optimizer": offload, "steps": steps, "use_gpu": gpu,
             "runs": runs, "push": push}
    if resume:
        saved = load_finetune_config(runs or "runs", resume)
        cfg = load_config(FinetuneConfig, saved.model_dump(mode="json", exclude={"s3"}), set_ or [], flags)
    else:
        cfg = load_config(FinetuneConfig, config, set_ or [], flags)
    if dry_run:
        typer.echo(json.dumps(cfg.model_dump(mode="json", exclude={"s3"}), indent=2))
        return
    summary = run_finetune(cfg, address, resume)
    from vidgen.runs.cards import loss_span_text

    validation = summary["validation"]
    pushed = f"; pushed as {cfg.push}@{summary['pushed']}" if summary.get("pushed") else ""
    renders = (f"validation renders (preview.png) in {summary['renders']}/" if summary["renders"] else
               "no validation renders: the model refused every validation prompt (set validation_prompts)")
    typer.echo(f"run {summary['run']}: {summary['steps']} steps on {summary['workers']} workers, "
               f"{loss_span_text(summary['first_loss'], summary['last_loss'], summary['loss_window'])}, "
               f"validation loss "
               f"{validation[0]['val_loss']:.4f} -> {validation[-1]['val_loss']:.4f}\n"
               f"{'adapter' if cfg.method == 'lora' else 'model'} (card, metrics.csv, SHA256SUMS) in "
               f"{summary['package']}/{pushed}\n{renders}\n"
               f"checkpoints in {summary['run_dir']}/, latents cached in {summary['latents']}/")
