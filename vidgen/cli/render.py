"""`vidgen render MANIFEST`: bulk-render a manifest with a Ray actor pool; exit 0 all rendered, 2 some rows bad."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from vidgen.cli._common import fail, progress, setup_logging


def render(
    manifest: Annotated[str, typer.Argument(help="JSONL or CSV rows with id and prompt (optional: negative_prompt, "
                                                 "seed, frames, height, width, steps, guidance, tier); a path or "
                                                 "s3://…")],
    out: Annotated[str, typer.Option(help="output folder or s3://BUCKET/PREFIX; re-running on it renders only "
                                          "what is missing")] = "out/render",
    model: Annotated[str | None, typer.Option(help="model folder, shipped model or registry reference "
                                                   "(default: the demo model)")] = None,
    batch_size: Annotated[int, typer.Option(help="clips sampled together")] = 8,
    actors: Annotated[int, typer.Option(help="sampling actors, one CPU each (each loads the model once)")] = 2,
    seed: Annotated[int, typer.Option(help="run seed: rows without a seed get one derived from (seed, id)")] = 0,
    preview: Annotated[bool, typer.Option(help="also write preview.png, a contact sheet of the first clips")] =
        False,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto)")] = None,
) -> None:
    """Render every row of a manifest to OUT/videos/<id>.mp4, with a ledger (results.jsonl), errors.jsonl, run.json.

    Exit status: 0 every row rendered, 2 some rows were invalid or failed (listed in errors.jsonl), 1 the job failed.
    """
    setup_logging()
    from jobs.render import RenderConfig
    from jobs.render import render as run_render
    from storage.objectstore import StorageError
    from storage.package import ModelFileError

    try:
        cfg = RenderConfig(manifest=manifest, model=model, out=out, batch_size=batch_size, actors=actors, seed=seed,
                           preview=preview)
    except ValueError as err:
        fail(str(err).replace("\n", " "))
    bar = progress()
    try:
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
    except (StorageError, ModelFileError, ValueError) as err:
        fail(str(err))
    typer.echo(f"{summary['rows']} rows: {summary['rendered_now']} rendered now, {summary['already_done']} done "
               f"before, {summary['errors']} not rendered (see errors.jsonl)\n"
               f"videos, results.jsonl, errors.jsonl and run.json are in {summary['out']}/")
    if summary["errors"]:
        raise typer.Exit(2)
