"""`vidgen distill --teacher REF --steps K --out OUT`: a K-step student of a vidgen model (jobs/distill.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidgen.cli._common import CONFIG_PRECEDENCE, SetOption, one_line_errors, progress, setup_logging


@one_line_errors(ValueError, RuntimeError)
def distill(
    out: Annotated[str, typer.Option(help="folder for the student package")],
    teacher: Annotated[str | None, typer.Option(help="the vidgen model to distill: folder, shipped name or registry "
                                                     "reference (default: the shipped demo model)")] = None,
    steps: Annotated[int | None, typer.Option(help="the student's sampler steps K, one transformer pass each "
                                                   "(default 2; must divide the teacher's steps)")] = None,
    trajectories: Annotated[int | None, typer.Option(help="teacher clips to learn from (default 2048)")] = None,
    train_steps: Annotated[int | None, typer.Option(help="optimiser steps (default 2000)")] = None,
    work: Annotated[str | None, typer.Option(help="folder or s3://… for the teacher's trajectories (default "
                                                  "OUT.trajectories); re-running renders only what is missing")]
        = None,
    config: Annotated[Path | None, typer.Option(help="a DistillJobConfig YAML (see jobs/distill.py) for the rest; "
                                                     f"{CONFIG_PRECEDENCE}")] = None,
    set_: SetOption = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster to render on (e.g. auto); default: a local one")]
        = None,
) -> None:
    """Distill a vidgen model into a K-step student that samples without guidance (one transformer pass a step
    instead of the teacher's two): the teacher renders trajectories on the bulk-render actor pool, the student
    learns to land where the teacher lands, and both are judged on the same prompts and seeds.

    The DistillJobConfig is --config, then each --set (e.g. --set distill.lr=5e-4), then the flags given here.
    """
    setup_logging()
    from jobs.distill import DistillJobConfig, run_distill
    from vidgen.config import load_config

    cfg = load_config(DistillJobConfig, config, set_ or [], {
        "out": out, "teacher": teacher, "trajectories": trajectories, "work": work, "distill.steps": steps,
        "distill.train_steps": train_steps})
    bar = progress()
    with bar:
        rendering = bar.add_task("teacher trajectories", total=cfg.trajectories, status="")
        training = bar.add_task("training the student", total=cfg.distill.train_steps, status="")
        summary = run_distill(
            cfg, address,
            on_render=lambda done, total: bar.update(rendering, completed=done, total=total),
            on_train=lambda step, loss: bar.update(training, completed=step, status=f"loss {loss:.4f}"))
    t, s = summary["teacher_scores"], summary["student_scores"]
    typer.echo(f"{summary['steps']}-step student of {summary['teacher']} from {summary['trajectories']} trajectories "
               f"({summary['minutes']['trajectories']:.1f} min rendering, {summary['minutes']['training']:.1f} min "
               "training)\n"
               f"  prompt accuracy seen/held-out/paraphrase: teacher {t['seen']:.2f}/{t['heldout']:.2f}/"
               f"{t['paraphrase']:.2f}, student {s['seen']:.2f}/{s['heldout']:.2f}/{s['paraphrase']:.2f}\n"
               f"  FD-frames teacher {t['fd_frames']:.1f}, student {s['fd_frames']:.1f}; FVD-vidgen teacher "
               f"{t['fvd_vidgen']:.2f}, student {s['fvd_vidgen']:.2f}\n"
               f"  ms per clip: teacher {t['seconds_per_clip'] * 1000:.1f}, student {s['seconds_per_clip'] * 1000:.1f}"
               f"\nthe student package is in {summary['out']}/ (card.md, evals.json); trajectories in "
               f"{summary['work']}/")
