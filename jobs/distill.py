"""Distill: a K-step student of a vidgen model, trained offline on the teacher's trajectories (`vidgen.distill`).

    WORK/manifest.jsonl        the teacher's prompts (training compositions of the built-in world) and seeds
    WORK/videos, results.jsonl the teacher's clips and their ledger, as any bulk render leaves them
    WORK/trajectories/<id>.npz the states at the student's timesteps and the final latents of each clip
    OUT/                       the student: a model package (weights, config.json with its lineage, card.md with its
                               metrics beside the teacher's, evals.json, distill_loss.csv, SHA256SUMS)

The trajectories are rendered by the bulk-render job itself (`jobs.render`, a Ray Data actor pool; re-running on the
same WORK renders only what is missing). The student trains in this process: Ray Train + DeepSpeed with one worker
at best matches the plain loop (benchmarks/train_scaling.py: 0.93-1.03x), more workers on a few CPU cores only split
the same cores, and on a GPU one device holds a 5M-parameter model many times over.

Run it:
    vidgen distill --teacher shapes-tiny --steps 1 --out out/shapes-tiny-k1
    python -m jobs.distill --config distill.yaml [--address auto]            # a DistillJobConfig as YAML
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from jobs._entrypoint import job_arguments
from jobs.render import RenderConfig, render
from storage.objectstore import ObjectStore, S3Config, parse_uri
from vidgen.diffusion import SamplerConfig
from vidgen.distill import DistillConfig, Trajectories, teacher_steps_at
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.packages import load_package
from vidgen.pipelines.references import model_label, resolve_model
from vidgen.pipelines.vidgen_package import VidgenPipeline
from vidgen.precision import Precision
from vidgen.runs.distillation import (
    judge,
    load_trajectories,
    manifest_ids,
    teacher_manifest,
    train_student,
    write_student,
)
from vidgen.text import TextEncoder

log = logging.getLogger(__name__)


class DistillJobConfig(BaseModel):
    """Which teacher, how many trajectories at which settings, how the student trains, where everything goes."""

    model_config = ConfigDict(extra="forbid")

    teacher: str | None = Field(None, description="the vidgen model to distill: folder, shipped name or registry "
                                                  "reference (default: the shipped demo model)")
    out: str = Field(description="folder for the student package")
    work: str | None = Field(None, description="folder or s3://… for the trajectories (default: OUT.trajectories)")
    trajectories: int = Field(2048, ge=1, description="teacher clips to render and learn from")
    teacher_steps: int = Field(24, ge=1, description="the teacher's Euler steps (the cloud tier's setting)")
    teacher_guidance: float | None = Field(None, description="the teacher's guidance (default: the teacher's own)")
    teacher_dtype: Precision = Field("auto", description="the precision the teacher renders in (vidgen.precision; "
                                                         "auto: bfloat16 on GPUs and CPUs with bf16 matmuls)")
    distill: DistillConfig = Field(default_factory=DistillConfig)
    eval_clips: int = Field(96, ge=1, description="clips per split to judge teacher and student on")
    perceptual_clips: int = Field(48, ge=2, description="clips of seen prompts for the perceptual metrics")
    actors: int = Field(2, ge=1, description="teacher rendering actors")
    batch_size: int = Field(16, ge=1, description="clips one actor samples together")
    seed: int = 0
    s3: S3Config = Field(default_factory=S3Config)

    @property
    def work_uri(self) -> str:
        return self.work or f"{self.out}.trajectories"


def kept_steps(cfg: DistillJobConfig) -> list[int]:
    """The teacher steps whose states the trajectories keep: those of this student and of every K <= 4 that divides
    the teacher's steps, so one trajectory set serves students of several K (benchmarks/distill.py)."""
    ks = {cfg.distill.steps, *(k for k in range(1, 5) if cfg.teacher_steps % k == 0)}
    teacher_steps_at(cfg.distill.steps, cfg.teacher_steps)
    return sorted({s for k in ks for s in teacher_steps_at(k, cfg.teacher_steps)})


def render_trajectories(cfg: DistillJobConfig, guidance: float, address: str | None = None,
                        on_render: Callable[[int, int], None] | None = None) -> float:
    """Render the teacher's trajectories into WORK with the bulk-render job; returns the minutes it took."""
    keep = kept_steps(cfg)  # a K off the teacher's grid is refused before anything is written
    store = ObjectStore(cfg.s3)
    work = parse_uri(cfg.work_uri)
    store.ensure_bucket(work)
    store.write(work.join("manifest.jsonl"), teacher_manifest(cfg.trajectories, cfg.seed))
    started = time.perf_counter()
    done = [0]

    def rendered(results: list[dict], left: int) -> None:
        done[0] += len(results)
        if on_render:
            on_render(done[0], done[0] + left)

    summary = render(RenderConfig(manifest=work.join("manifest.jsonl").uri, model=cfg.teacher, out=work.uri,
                                  steps=cfg.teacher_steps, guidance=guidance, batch_size=cfg.batch_size,
                                  actors=cfg.actors, seed=cfg.seed, trajectory_steps=keep, s3=cfg.s3,
                                  pipeline=PipelineOptions(dtype=cfg.teacher_dtype)),
                     address, rendered)
    if summary["errors"]:
        raise RuntimeError(f"{summary['errors']} teacher clips failed to render; see {work.join('errors.jsonl').uri}")
    return (time.perf_counter() - started) / 60


def read_trajectories(cfg: DistillJobConfig, label: str, encoder: TextEncoder) -> Trajectories:
    """The trajectories of this run's rows, each rendered by the teacher `label` names (WORK may hold more rows, or
    rows of another teacher: the student's card names the teacher it learnt from)."""
    ids = manifest_ids(teacher_manifest(cfg.trajectories, cfg.seed))
    return load_trajectories(ObjectStore(cfg.s3), cfg.work_uri, encoder, cfg.teacher_steps, label, ids)


def teacher_guidance(cfg: DistillJobConfig, teacher) -> float:
    if cfg.teacher_guidance is not None:
        return cfg.teacher_guidance
    return teacher.config.get("sampler", {}).get("guidance", SamplerConfig().guidance)


def run_distill(cfg: DistillJobConfig, address: str | None = None,
                on_render: Callable[[int, int], None] | None = None,
                on_train: Callable[[int, float], None] | None = None) -> dict:
    """Render the teacher's trajectories, train the student, judge both, write the student; returns a summary.
    `on_render(done, total)` after each rendered batch, `on_train(step, loss)` after each optimiser step."""
    folder = resolve_model(cfg.teacher)
    teacher = load_package(folder)
    label = model_label(cfg.teacher, folder, teacher.sums)
    guidance = teacher_guidance(cfg, teacher)
    trajectories_min = render_trajectories(cfg, guidance, address, on_render)
    encoder = TextEncoder()
    data = read_trajectories(cfg, label, encoder)
    log.info("training a %d-step student on %d trajectories", cfg.distill.steps, len(data))
    started = time.perf_counter()
    student, history = train_student(teacher.model, data, cfg.distill, on_train)
    training_min = (time.perf_counter() - started) / 60

    teacher_pipeline = VidgenPipeline.from_model(teacher.model, SamplerConfig(steps=cfg.teacher_steps,
                                                                              guidance=guidance), encoder, label)
    student_pipeline = VidgenPipeline.from_model(student, SamplerConfig(steps=cfg.distill.steps, guidance=1.0),
                                                 encoder, "student")
    scores = {"clips_per_split": cfg.eval_clips,
              "teacher": judge(teacher_pipeline, cfg.eval_clips, cfg.perceptual_clips),
              "student": judge(student_pipeline, cfg.eval_clips, cfg.perceptual_clips)}
    lineage = {"ref": str(cfg.teacher or folder.name), "label": label, "digest": teacher.sums["model.safetensors"]}
    write_student(student, cfg.out, lineage, cfg.distill, len(data), scores, history,
                  {"trajectories": trajectories_min, "training": training_min})
    return {"out": cfg.out, "work": parse_uri(cfg.work_uri).uri, "teacher": label, "steps": cfg.distill.steps,
            "trajectories": len(data), "minutes": {"trajectories": trajectories_min, "training": training_min},
            "teacher_scores": _brief(scores["teacher"]), "student_scores": _brief(scores["student"])}


def _brief(scores: dict) -> dict:
    return {"seen": scores["seen"]["all_three"], "heldout": scores["heldout"]["all_three"],
            "paraphrase": scores["paraphrase"]["all_three"], "fd_frames": scores["perceptual"]["fd_frames"],
            "fvd_vidgen": scores["perceptual"]["fvd_vidgen"], "seconds_per_clip": scores["seconds_per_clip"]}


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, DistillJobConfig)
    summary = run_distill(cfg, args.address)
    log.info("done: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
