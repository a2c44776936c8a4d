"""`vidgen data prepare|verify`: make a sharded data set in a folder or bucket, and re-check one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import fail, progress, setup_logging

app = typer.Typer(help="Data sets: checksummed video shards in a local folder or an S3 bucket.",
                  no_args_is_help=True)

URI_HELP = "a local folder, file:///ABS/PATH or s3://BUCKET/PREFIX (S3 settings: AWS_ENDPOINT_URL, AWS_* keys)"


@app.command()
def prepare(
    out: Annotated[str, typer.Option(help=f"where the data set goes: {URI_HELP}")],
    n: Annotated[int, typer.Option(help="clips in all splits together (5% eval, 5% held-out compositions)")] = 2000,
    config: Annotated[Path | None, typer.Option(help="a YAML PrepareConfig (see jobs/prepare.py); --n and --out "
                                                     "override it")] = None,
    seed: Annotated[int | None, typer.Option(help="seed of the synthetic world")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto); default: start a local "
                                                     "one")] = None,
) -> None:
    """Render clips of the built-in world, encode them as H.264 and write tar shards, a dataset card and an index.

    Shards are written in parallel by Ray Data; the index is written last, so a half-made data set never looks
    complete. Example: vidgen data prepare --n 2000 --out data/shapes
    """
    setup_logging()
    import yaml

    from jobs.prepare import PrepareConfig
    from jobs.prepare import prepare as run_prepare
    from storage.objectstore import StorageError

    try:
        base = (yaml.safe_load(config.read_text()) or {}) if config else {}
        cfg = PrepareConfig(**{**base, "n": n, "out": out, **({"seed": seed} if seed is not None else {})})
    except (OSError, ValueError) as err:
        fail(str(err).replace("\n", " "))
    bar = progress()
    try:
        with bar:
            task = bar.add_task("writing shards", total=None, status="")

            def on_shard(entry, total: int) -> None:
                bar.update(task, total=total, advance=1, status=entry.name)

            summary = run_prepare(cfg, address, on_shard)
    except (StorageError, ValueError) as err:
        fail(str(err))
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    typer.echo(f"wrote {summary['samples']} clips ({splits}) in {summary['shards']} shards, "
               f"{summary['bytes'] / 1e6:.1f} MB, to {summary['out']} (card: README.md, index: index.json)")


@app.command()
def verify(
    uri: Annotated[str, typer.Argument(help=f"the data set: {URI_HELP}")],
) -> None:
    """Re-check every shard and sample checksum, the dataset card, and that no eval clip leaked into train.

    Names every shard and sample key that is wrong and exits with status 1 if anything is.
    """
    setup_logging()
    from storage.datasets import open_dataset, verify_dataset
    from storage.objectstore import ObjectStore, StorageError

    store = ObjectStore()
    bar = progress()
    try:
        dataset = open_dataset(store, uri)
        total = len(dataset.index.shards)
        with bar:
            task = bar.add_task("verifying shards", total=total, status="")
            problems = verify_dataset(store, dataset, lambda shard, found: bar.update(
                task, advance=1, status=f"{shard.name}: {'ok' if not found else f'{len(found)} problems'}"))
    except StorageError as err:
        fail(str(err))
    if problems:
        for problem in problems:
            typer.secho(f"  {problem}", err=True, fg=typer.colors.RED)
        fail(f"{len(problems)} problems in {uri}")
    typer.echo(f"{uri}: {total} shards, every checksum matches, the card agrees with the index, "
               "and no eval or held-out clip is in train")
