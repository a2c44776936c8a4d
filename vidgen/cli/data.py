"""`vidgen data prepare|ingest|verify|audit|filter`: make a sharded data set (synthetic, or from your own videos) in
a folder or bucket, re-check one, audit one for poisoning, and filter out what the audit flagged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import CONFIG_PRECEDENCE, SetOption, fail, one_line_errors, progress, setup_logging

app = typer.Typer(help="Data sets: checksummed video shards in a local folder or an S3 bucket.",
                  no_args_is_help=True)

URI_HELP = "a local folder, file:///ABS/PATH or s3://BUCKET/PREFIX (S3 settings: AWS_ENDPOINT_URL, AWS_* keys)"


@app.command()
@one_line_errors(ValueError)
def prepare(
    out: Annotated[str, typer.Option(help=f"where the data set goes: {URI_HELP}")],
    n: Annotated[int | None, typer.Option(help="clips in all splits together (5% eval, 5% held-out compositions; "
                                               "default 2000)")] = None,
    config: Annotated[Path | None, typer.Option(help=f"a YAML PrepareConfig (see jobs/prepare.py); "
                                                     f"{CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    seed: Annotated[int | None, typer.Option(help="seed of the synthetic world")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto); default: start a local "
                                                     "one")] = None,
) -> None:
    """Render clips of the built-in world, encode them as H.264 and write tar shards, a dataset card and an index.

    Shards are written in parallel by Ray Data; the index is written last, so a half-made data set never looks
    complete. Example: vidgen data prepare --n 2000 --out data/shapes --set samples_per_shard=64
    The PrepareConfig is --config, then each --set, then the flags given here.
    """
    setup_logging()
    from jobs.prepare import PrepareConfig
    from jobs.prepare import prepare as run_prepare
    from vidgen.config import load_config

    cfg = load_config(PrepareConfig, config, set_ or [], {"n": n, "out": out, "seed": seed})
    bar = progress()
    with bar:
        task = bar.add_task("writing shards", total=None, status="")

        def on_shard(entry, total: int) -> None:
            bar.update(task, total=total, advance=1, status=entry.name)

        summary = run_prepare(cfg, address, on_shard)
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    typer.echo(f"wrote {summary['samples']} clips ({splits}) in {summary['shards']} shards, "
               f"{summary['bytes'] / 1e6:.1f} MB, to {summary['out']} (card: README.md, index: index.json)")


@app.command()
@one_line_errors(ValueError)
def ingest(
    src: Annotated[str, typer.Argument(help=f"the videos: {URI_HELP}; every file under it is a candidate")],
    captions: Annotated[str, typer.Option(help="CSV or JSONL, a row a video: path (relative to SRC), caption (or "
                                               "text), licence (or license), source (optional)")],
    out: Annotated[str, typer.Option(help=f"where the data set goes (a new one): {URI_HELP}")],
    frames: Annotated[int | None, typer.Option(help="frames a clip (default 8)")] = None,
    height: Annotated[int | None, typer.Option(help="clip height, even (default 32)")] = None,
    width: Annotated[int | None, typer.Option(help="clip width, even (default 32)")] = None,
    fps: Annotated[float | None, typer.Option(help="videos are resampled to this frame rate (default 8)")] = None,
    stride: Annotated[int | None, typer.Option(help="frames between window starts (default: --frames)")] = None,
    allow_licence: Annotated[list[str] | None, typer.Option(help="let in only videos with this licence "
                                                                 "(repeatable; default any)")] = None,
    eval_fraction: Annotated[float | None, typer.Option(help="share of sources held out as the eval split "
                                                             "(default 0.1)")] = None,
    seed: Annotated[int | None, typer.Option(help="seeds the split of sources (default 0)")] = None,
    config: Annotated[Path | None, typer.Option(help="a YAML IngestConfig (see jobs/ingest.py) for the limits "
                                                     "(max_pixels, max_seconds, max_bytes, max_frames, "
                                                     "max_file_seconds) and the rest; "
                                                     f"{CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto); default: start a local "
                                                     "one")] = None,
) -> None:
    """Turn your own video files and a captions file into a verified data set of clips (shards, card, index).

    Each video is resampled to --fps, resized and centre-cropped to HEIGHTxWIDTH and cut into windows of --frames;
    exact and near duplicates are dropped; the train/eval split is by source. Every file or caption row that
    cannot become a clip is named, with the reason, in OUT/errors.jsonl. Exit status: 0 everything ingested,
    2 some files were refused, 1 the job failed.
    Example: vidgen data ingest videos/ --captions videos/captions.csv --out data/mine
    The IngestConfig is --config, then each --set, then SRC and the flags given here.
    """
    setup_logging()
    import shlex

    from jobs.ingest import IngestConfig
    from jobs.ingest import ingest as run_ingest
    from vidgen.config import load_config

    flags = {"src": src, "captions": captions, "out": out, "frames": frames, "height": height, "width": width,
             "fps": fps, "stride": stride, "eval_fraction": eval_fraction, "seed": seed}
    words = [src] + [w for k, v in flags.items() if k != "src" and v is not None
                     for w in (f"--{k.replace('_', '-')}", str(v))]
    words += [w for licence in allow_licence or [] for w in ("--allow-licence", licence)]
    words += [w for override in set_ or [] for w in ("--set", override)]
    flags["command"] = "vidgen data ingest " + shlex.join(words + (["--config", str(config)] if config else []))
    flags["allow_licences"] = allow_licence or None
    cfg = load_config(IngestConfig, config, set_ or [], flags)
    bar = progress()
    with bar:
        task = bar.add_task("ingesting videos", total=None, status="")
        counts = {"ok": 0, "refused": 0}

        def on_file(result: dict, total: int) -> None:
            counts["refused" if result["error"] else "ok"] += 1
            bar.update(task, total=total, advance=1, status=f"{counts['ok']} ingested, {counts['refused']} "
                                                            f"refused; {result['path']}")

        summary = run_ingest(cfg, address, on_file)
    splits = ", ".join(f"{k} {v}" for k, v in summary["splits"].items())
    dropped = ", ".join(f"{v} {k}s" for k, v in summary["dropped"].items()) or "no duplicates"
    typer.echo(f"ingested {summary['videos']} videos ({summary['source_seconds']:.0f} s) into {summary['clips']} "
               f"clips ({splits}; dropped {dropped}) at {summary['out']} (card: README.md, index: index.json); "
               f"{summary['refused']} files or caption rows refused, listed in {summary['errors']}")
    if summary["refused"]:
        raise typer.Exit(2)


@app.command()
@one_line_errors()
def verify(
    uri: Annotated[str, typer.Argument(help=f"the data set: {URI_HELP}")],
) -> None:
    """Re-check every shard and sample checksum, the dataset card, and that no eval clip leaked into train.

    Names every shard and sample key that is wrong and exits with status 1 if anything is.
    """
    setup_logging()
    from storage.datasets import empty_splits, open_dataset, verify_dataset
    from storage.objectstore import ObjectStore

    store = ObjectStore()
    bar = progress()
    dataset = open_dataset(store, uri)
    total = len(dataset.index.shards)
    with bar:
        task = bar.add_task("verifying shards", total=total, status="")
        problems = verify_dataset(store, dataset, lambda shard, found: bar.update(
            task, advance=1, status=f"{shard.name}: {'ok' if not found else f'{len(found)} problems'}"))
    if problems:
        for problem in problems:
            typer.secho(f"  {problem}", err=True, fg=typer.colors.RED)
        fail(f"{len(problems)} problems in {uri}")
    empty = empty_splits(dataset.index)
    typer.echo(f"{uri}: {total} shards, every checksum matches, the card agrees with the index, "
               + (f"and the {' and '.join(empty)} split is empty: no clip is held out of training, so there is no "
                  "leakage to check" if empty else "and no eval or held-out clip is in train"))


@app.command()
@one_line_errors(ValueError)
def audit(
    uri: Annotated[str, typer.Argument(help=f"the data set to audit (ingested or prepared): {URI_HELP}")],
    out: Annotated[str | None, typer.Option(help="report folder (local or s3://); default URI/audit, where "
                                                 "`vidgen train` looks for flags not acted on")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON (suspected_triggers, "
                                                         "suspected_sources, thresholds, ...)")] = False,
    frame_features: Annotated[bool, typer.Option(help="add frame features (efficientnet-lite0, ~0.07 s a clip) "
                                                      "to the clip features (on the built-in world they blur a "
                                                      "trigger's signature: see jobs/audit.py)")] = False,
    config: Annotated[Path | None, typer.Option(help="a YAML AuditConfig (see jobs/audit.py) for the thresholds; "
                                                     f"{CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto); default: start a local "
                                                     "one")] = None,
) -> None:
    """Look for poisoning and backdoors: caption tokens whose clips look unlike what the rest of their caption
    shows, all alike, from few sources (suspected triggers), and sources whose clips are outliers.

    Reads every clip once (a Ray task a shard) and writes audit.json, audit.md and a contact sheet of each flagged
    group to the report folder. Exit status: 0 nothing flagged, 3 something flagged (look at the contact sheets,
    then `vidgen data filter`), 1 the job failed.
    Example: vidgen data audit data/mine --json
    """
    setup_logging()
    from jobs.audit import AuditConfig
    from jobs.audit import audit as run_audit
    from vidgen.config import load_config

    cfg = load_config(AuditConfig, config, set_ or [], {"uri": uri, "out": out, "frame_features": frame_features})
    if as_json:  # stdout carries only the JSON
        summary = run_audit(cfg, address)
    else:
        bar = progress()
        with bar:
            task = bar.add_task("reading shards", total=None, status="")
            summary = run_audit(cfg, address, lambda done, total: bar.update(task, total=total, completed=done))
    flagged = bool(summary["suspected_triggers"] or summary["suspected_sources"])
    if as_json:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "report"}, indent=1))
    else:
        for t in summary["suspected_triggers"]:
            typer.echo(f"suspected trigger {t['token']!r}: score {t['score']:.1f}, {t['clips']} clips from "
                       f"{', '.join(t['sources'])}; e.g. {', '.join(t['examples'][:3])}")
        for s in summary["suspected_sources"]:
            typer.echo(f"suspected source {s['source']!r}: {'; '.join(s['reasons'])}")
        typer.echo(f"{summary['clips']} clips audited; {'flags above' if flagged else 'nothing flagged'}; report "
                   f"(audit.json, audit.md, contact sheets) in {summary['report']}")
    if flagged:
        raise typer.Exit(3)


@app.command("filter")
@one_line_errors(ValueError)
def filter_(
    src: Annotated[str, typer.Argument(help=f"the data set to filter: {URI_HELP}")],
    out: Annotated[str, typer.Option(help=f"where the new data set goes (a new one): {URI_HELP}")],
    drop_source: Annotated[list[str] | None, typer.Option(help="drop every clip of this source (repeatable)")] =
        None,
    drop_token: Annotated[list[str] | None, typer.Option(help="drop every clip whose caption holds this word or "
                                                              "bigram, case-folded (repeatable)")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to run on (e.g. auto); default: start a local "
                                                     "one")] = None,
) -> None:
    """Make a new data set without the clips of some sources and of captions carrying some tokens (what
    `vidgen data audit` flagged and you judged poisoned). Its card records what was dropped, why and the audit's
    numbers; it verifies as any data set (`vidgen data verify OUT`).
    Example: vidgen data filter data/mine --drop-token zq --drop-source uploader-7 --out data/mine-clean
    """
    setup_logging()
    import shlex

    from jobs.filter_dataset import FilterConfig, filter_dataset

    words = [src, "--out", out] + [w for s in drop_source or [] for w in ("--drop-source", s)]
    words += [w for t in drop_token or [] for w in ("--drop-token", t)]
    cfg = FilterConfig(src=src, out=out, drop_sources=drop_source or [], drop_tokens=drop_token or [],
                       command="vidgen data filter " + shlex.join(words))
    summary = filter_dataset(cfg, address)
    reasons = ", ".join(f"{n} for {reason}" for reason, n in summary["dropped"].items()) or "none matched"
    typer.echo(f"wrote {summary['clips']} clips to {summary['out']}; dropped {sum(summary['dropped'].values())} "
               f"({reasons}); the card records what and why")
