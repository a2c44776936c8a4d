"""`vidgen models push|import|pull|list|promote|rollback|history`: versioned model packages in a registry (a folder
or an S3 prefix), and aliases (NAME@production) moved by eval-gated promotion and rollback;
`vidgen models train-feature-net`: the video network whose features FVD-vidgen is measured in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import GATE_REFUSED_STATUS, fail, one_line_errors, progress, setup_logging

app = typer.Typer(help="Models: push vidgen packages or import diffusers pipeline folders as versions (NAME@vN, "
                       "NAME@latest); pull and list them; promote a version to an alias (NAME@production) behind "
                       "an evaluation gate, roll it back, read its history.",
                  no_args_is_help=True)

ROOT_HELP = "registry root: a folder or s3://BUCKET/PREFIX (default: $VIDGEN_REGISTRY or ~/.vidgen/registry)"


@app.command()
@one_line_errors()
def push(
    model: Annotated[str, typer.Argument(help="a model: a package folder (config.json, model.safetensors, card.md, "
                                              "SHA256SUMS; e.g. the --out of vidgen train), a shipped model "
                                              "(shapes-tiny) or a registry reference (NAME@vN, s3://…/NAME@vN)")],
    name: Annotated[str, typer.Argument(help="model name in the registry, e.g. shapes")],
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Verify a model package and upload it as the next version of NAME (v1, v2, ...)."""
    setup_logging()
    from storage.registry import model_location
    from storage.registry import push as push_model
    from storage.user_state import registry_root
    from vidgen.pipelines.references import resolve_model

    model_uri = model_location(root or registry_root(), name).uri
    version = push_model(resolve_model(model), model_uri)
    typer.echo(f"pushed {model} as {name}@{version} to {model_uri}/{version}")


@app.command("import")
@one_line_errors()
def import_(
    folder: Annotated[Path, typer.Argument(help="a diffusers pipeline folder (model_index.json and one subfolder "
                                                "per component), e.g. what pipeline.save_pretrained wrote")],
    name: Annotated[str, typer.Argument(help="model name in the registry, e.g. wan-1.3b")],
    licence: Annotated[str | None, typer.Option(help="the model's licence as its publisher states it (e.g. "
                                                     "apache-2.0); default: the license in FOLDER/README.md")] = None,
    source: Annotated[str | None, typer.Option(help="where the weights came from, for the card (e.g. "
                                                    "Wan-AI/Wan2.1-T2V-1.3B-Diffusers); default: the folder")] = None,
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Package a diffusers pipeline folder (every file checked, a model card written, SHA256SUMS over all files) and
    upload it as the next version of NAME. Pickled weights (.bin, .pt) are refused: convert them to safetensors."""
    setup_logging()
    import tempfile

    from storage.registry import model_location
    from storage.registry import push as push_model
    from storage.user_state import registry_root
    from vidgen.pipelines.model_import import import_diffusers_folder

    model_uri = model_location(root or registry_root(), name).uri
    with tempfile.TemporaryDirectory(prefix="vidgen-import-") as tmp:
        package = import_diffusers_folder(folder, Path(tmp) / name, licence, source)
        files = sum(1 for p in package.rglob("*") if p.is_file())
        version = push_model(package, model_uri)
    typer.echo(f"imported {folder} ({files} files with card.md and SHA256SUMS) as {name}@{version} to "
               f"{model_uri}/{version}")


@app.command()
@one_line_errors()
def pull(
    ref: Annotated[str, typer.Argument(help="NAME@vN, NAME@latest, NAME, or s3://…/NAME@vN")],
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Download a model version into the local cache, verify every file, and print its folder."""
    setup_logging()
    from storage.registry import pull as pull_model

    folder = pull_model(ref, root)
    typer.echo(str(folder))


@app.command("list")
@one_line_errors()
def list_(
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """List every model in the registry with its complete versions."""
    setup_logging()
    from storage.registry import list_models
    from storage.user_state import registry_root

    models = list_models(root)
    if not models:
        typer.echo(f"no models in {root or registry_root()}")
    for name, versions in models.items():
        typer.echo(f"{name}: {', '.join(versions)} (latest {versions[-1]})")


@app.command()
@one_line_errors(ValueError)
def promote(
    ref: Annotated[str, typer.Argument(help="the candidate, NAME@vN (or NAME@latest): a model, or a LoRA adapter "
                                            "judged as its base with the adapter fused in")],
    to: Annotated[str, typer.Option("--to", help="the alias to move, e.g. production")],
    reason: Annotated[str, typer.Option(help="why, for the alias's history")] = "",
    force: Annotated[bool, typer.Option(help="move the alias even if the gate refuses or its evaluation cannot "
                                             "run (recorded as forced, with what ran)")] = False,
    data: Annotated[str | None, typer.Option(help="a data set from `vidgen data ingest` (folder or s3://…): a "
                                                  "diffusers model or adapter is judged on its eval split's clips "
                                                  "(validation loss, FD of frames, temporal consistency)")] = None,
    base: Annotated[str | None, typer.Option(help="the model an adapter candidate was trained on, when its "
                                                  "adapter.json names a folder, not a version of this registry")]
        = None,
    clips: Annotated[int, typer.Option(help="evaluation clips per split (with --data: held-out clips), for both "
                                            "versions")] = 32,
    frames: Annotated[int | None, typer.Option(help="frames of the clips the gate evaluates at (default: the "
                                                    "model's; with --data, at most this many)")] = None,
    height: Annotated[int | None, typer.Option(help="height of the evaluated clips (default: the model's; with "
                                                    "--data, at most)")] = None,
    width: Annotated[int | None, typer.Option(help="width of the evaluated clips (default: the model's; with "
                                                   "--data, at most)")] = None,
    steps: Annotated[int | None, typer.Option(help="sampler steps of the evaluated clips (default: the model's)")]
        = None,
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Evaluate NAME@vN and the version NAME@ALIAS names now on the same prompts or clips and seeds, and move the
    alias only if the candidate is not worse; with no current version, the candidate's numbers become the baseline.

    What is measured: a vidgen model of the built-in world, prompt accuracy on seen and held-out compositions; a
    diffusers model or adapter with --data, validation loss, FD of frames and temporal consistency on the data set's
    held-out clips (fitted to a shape the model makes); both, seconds per clip. A candidate with no quality
    measure (a diffusers model without --data, a vidgen model trained on your own videos) is refused (exit status
    3, as for any refusal) and moves only with --force, recorded as not having passed the gate, so no rollback goes
    to it. Forced, it is timed only at a clip you name (--frames/--height/--width/--steps); otherwise the history
    records that no evaluation ran."""
    setup_logging()
    from vidgen.runs.promotion import EvalClip, GateRefused
    from vidgen.runs.promotion import promote as promote_model

    name, _, version = ref.partition("@")
    bar = progress()
    tasks: dict[str, int] = {}

    def evaluated(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = bar.add_task(f"evaluating {name}@{label}", total=total, status="")
        bar.update(tasks[label], completed=done)

    try:
        with bar:
            record = promote_model(name, version or "latest", to, reason, force=force, root=root, clips=clips,
                                   clip=EvalClip(frames, height, width, steps), progress=evaluated, data=data,
                                   base=base)
    except GateRefused as refused:
        fail(str(refused), GATE_REFUSED_STATUS)
    found = record.evaluation
    forced = " (forced past the gate: " + "; ".join(found["problems"]) + ")" if found.get("forced") else ""
    baseline = "; the alias's baseline" if found.get("baseline") else ""
    typer.echo(f"{name}@{to} -> {record.version} (was {record.previous or 'unset'}), revision {record.revision}"
               f"{forced}; candidate {_summary(found['candidate'])}{baseline}"
               + (f"; previous {_summary(found['current'])}" if "current" in found else ""))


def _summary(facts: dict) -> str:
    if "none_ran" in facts:
        return f"{facts['version']}: not evaluated"
    if "held_out" in facts:
        m = facts["held_out"]
        return (f"{facts['version']}: held-out val loss {m['val_loss']:.4f}, FD {m['fd_frames']:.2f}, subject "
                f"consistency {m['subject_consistency']:.3f}, flicker {m['flicker']:.3f}, "
                f"{facts['seconds_per_clip']:.3f} s a clip")
    accuracy = ", ".join(f"{k} {v:.2f}" for k, v in facts.get("prompt_accuracy", {}).items())
    return f"{facts['version']}: {accuracy + ', ' if accuracy else ''}{facts['seconds_per_clip']:.3f} s a clip"


@app.command()
@one_line_errors()
def rollback(
    name: Annotated[str, typer.Argument(help="model name in the registry")],
    alias: Annotated[str, typer.Option(help="the alias to move back, e.g. production")],
    reason: Annotated[str, typer.Option(help="why, for the alias's history")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="move without asking (the target is printed all the same)")]
    = False,
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Move NAME@ALIAS back to the newest version that passed the promotion gate and was not rolled back from since
    (no evaluation: it is the way back). Prints that version and asks before anything moves; if the alias moves
    meanwhile, nothing does."""
    setup_logging()
    from vidgen.runs.promotion import rollback as rollback_model
    from vidgen.runs.promotion import rollback_plan

    plan = rollback_plan(name, alias, root=root)
    typer.echo(f"{name}@{alias} names {plan.current} (revision {plan.revision}); a rollback moves it to "
               f"{plan.target}, the newest version that passed the promotion gate and was not rolled back from")
    if not yes:
        typer.confirm(f"move {name}@{alias} to {plan.target}?", abort=True)
    record = rollback_model(name, alias, reason, root=root, plan=plan)
    typer.echo(f"{name}@{alias} -> {record.version} (was {record.previous}), revision {record.revision}")


@app.command()
@one_line_errors()
def history(
    name: Annotated[str, typer.Argument(help="model name in the registry")],
    alias: Annotated[str | None, typer.Option(help="only this alias")] = None,
    root: Annotated[str | None, typer.Option(help=ROOT_HELP)] = None,
) -> None:
    """Every move of the model's aliases: when, to which version, from which, by whom, why."""
    setup_logging()
    import datetime

    from storage.aliases import aliases
    from storage.aliases import history as alias_history
    from storage.registry import model_location
    from storage.user_state import registry_root

    model_uri = model_location(root or registry_root(), name).uri
    names = [alias] if alias else aliases(model_uri)
    records = [r for a in names for r in alias_history(model_uri, a)]
    if not records:
        typer.echo(f"{name} has no aliases")
    for r in sorted(records, key=lambda r: r.at):
        at = datetime.datetime.fromtimestamp(r.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        forced = " forced" if r.evaluation.get("forced") else ""
        gated = " (passed the gate)" if r.passed_gate else ""
        typer.echo(f"{at}  {r.alias} r{r.revision}: {r.previous or '-'} -> {r.version}  {r.kind}{forced} by {r.by}"
                   f"{': ' + r.reason if r.reason else ''}{gated}")


@app.command("train-feature-net")
@one_line_errors()
def train_feature_net(
    out: Annotated[Path, typer.Argument(help="folder for the feature net package")],
    steps: Annotated[int, typer.Option(help="optimiser steps, each on fresh clips of the built-in world")] = 800,
    seed: Annotated[int, typer.Option(help="training seed")] = 0,
) -> None:
    """Train FVD-vidgen's video network (a small 3D conv net that reads colour, shape, direction and speed from
    clips of the built-in world) and write it as a package; the shipped one is vidgen/shipped_feature_nets/."""
    setup_logging()
    from vidgen.runs.feature_nets import train_video_feature_net

    bar = progress()
    with bar:
        task = bar.add_task("training", total=steps, status="")
        facts = train_video_feature_net(out, steps, seed=seed,
                                        progress=lambda i, loss: bar.update(task, completed=i,
                                                                            status=f"loss {loss:.3f}"))
    acc = facts["heldout_accuracy"]
    typer.echo(f"wrote {out} in {facts['minutes']:.1f} min; on new clips: colour {acc['colour']:.2f}, shape "
               f"{acc['shape']:.2f}, direction {acc['direction']:.2f}, speed error {acc['speed_mae']:.2f} px/frame")
