"""`vidgen render MANIFEST`: bulk-render a manifest with a Ray actor pool; exit 0 all rendered, 2 some rows bad."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import CACHE_HELP, CONFIG_PRECEDENCE, SetOption, one_line_errors, progress, setup_logging


@one_line_errors(ValueError)
def render(
    manifest: Annotated[str, typer.Argument(help="JSONL or CSV rows with id and prompt (optional: negative_prompt, "
                                                 "seed, frames, height, width, steps, guidance; a row naming a "
                                                 "serving tier is refused: one model renders every row); a path "
                                                 "or s3://…")],
    out: Annotated[str | None, typer.Option(help="output folder or s3://BUCKET/PREFIX (default out/render); "
                                                 "re-running on it renders only what is missing, and again "
                                                 "what another model or other settings made")] = None,
    model: Annotated[str | None, typer.Option(help="model folder (a vidgen package or a diffusers pipeline "
                                                   "folder), shipped model or registry reference (default: the "
                                                   "demo model)")] = None,
    config: Annotated[Path | None, typer.Option(help="a RenderConfig YAML (see jobs/render.py) for the rest, e.g. "
                                                     "pipeline: {dtype: bfloat16, cpu_offload: true}; "
                                                     f"{CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    frames: Annotated[int | None, typer.Option(help="frames for rows that name none (default: the model's)")] = None,
    height: Annotated[int | None, typer.Option(help="height for rows that name none")] = None,
    width: Annotated[int | None, typer.Option(help="width for rows that name none")] = None,
    steps: Annotated[int | None, typer.Option(help="sampler steps for rows that name none")] = None,
    gpus_per_actor: Annotated[float | None, typer.Option(help="GPUs per actor (1: one model per GPU); default 0, "
                                                              "sampling on CPUs")] = None,
    batch_size: Annotated[int | None, typer.Option(help="clips sampled together (default 8)")] = None,
    actors: Annotated[int | None, typer.Option(help="sampling actors (default 2), each loading the model once")] =
        None,
    seed: Annotated[int | None, typer.Option(help="run seed: rows without a seed get one derived from (seed, id)")]
        = None,
    preview: Annotated[bool | None, typer.Option(help="also write preview.png, a contact sheet of the first clips")]
        = None,
    report: Annotated[bool | None, typer.Option(help="also write OUT/report.html, a page to open in a browser: "
                                                     "every rendered row's video with its prompt and settings, "
                                                     "and the rows not rendered with why")] = None,
    lora: Annotated[str | None, typer.Option(help="a LoRA adapter from `vidgen finetune` (folder or registry "
                                                  "reference) fused into the model once per actor; refused unless "
                                                  "it was trained on --model")] = None,
    lora_scale: Annotated[float | None, typer.Option(help="adapter strength: 1 as trained (default), 0 the base "
                                                          "model's output")] = None,
    cache: Annotated[str | None, typer.Option(help=f"{CACHE_HELP}; each row's record counts its steps in full and "
                                                   "skipped")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto)")] = None,
) -> None:
    """Render every row of a manifest to OUT/videos/<id>.mp4, with a ledger (results.jsonl), errors.jsonl, run.json.

    Exit status: 0 every row rendered, 2 some rows were invalid or failed (listed in errors.jsonl), 1 the job failed.
    The RenderConfig is --config, then each --set, then MANIFEST and the flags given here.
    """
    setup_logging()
    from jobs.render import RenderConfig
    from jobs.render import render as run_render
    from vidgen.config import load_config
    from vidgen.pipelines.options import StepCacheOptions

    cfg = load_config(RenderConfig, config, set_ or [], {
        "manifest": manifest, "out": out, "model": model, "frames": frames, "height": height, "width": width,
        "steps": steps, "gpus_per_actor": gpus_per_actor, "batch_size": batch_size, "actors": actors, "seed": seed,
        "preview": preview, "report": report, "pipeline.lora": lora, "pipeline.lora_scale": lora_scale,
        "pipeline.cache": cache and StepCacheOptions.from_flag(cache).model_dump()})
    bar = progress()
    with bar:
        task = bar.add_task("rendering", total=None, status="")
        counts = {"done": 0, "failed": 0}
        started = time.perf_counter()

        def on_batch(results: list[dict], left: int) -> None:
            counts["done"] += sum(r["ok"] for r in results)
            counts["failed"] += sum(not r["ok"] for r in results)
            bar.update(task, total=counts["done"] + counts["failed"] + left,
                       completed=counts["done"] + counts["failed"],
                       status=f"{counts['done']} rendered, {counts['failed']} failed, {left} left, "
                              f"{counts['done'] / (time.perf_counter() - started):.1f} clips/s")

        summary = run_render(cfg, address, on_batch)
    typer.echo(f"{summary['rows']} rows: {summary['rendered_now']} rendered now, {summary['already_done']} done "
               f"before, {summary['errors']} not rendered (see errors.jsonl)\n"
               f"videos, results.jsonl, errors.jsonl and run.json are in {summary['out']}/")
    if "report" in summary:
        typer.echo(f"report: {summary['report']}")
    if summary["errors"]:
        raise typer.Exit(2)
