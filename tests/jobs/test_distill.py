"""The distill job end to end on a real local Ray: trajectories rendered by the bulk-render actor pool match the
teacher's own sampler, and the student is a verified package that samples K steps without guidance."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from jobs.distill import DistillJobConfig, kept_steps, run_distill
from jobs.render import RenderConfig, render
from storage.cards import parse_card
from storage.package import verify_package


def test_kept_steps_serve_every_small_k_that_divides_the_teacher():
    cfg = DistillJobConfig(out="x", teacher_steps=24, distill={"steps": 2})
    assert kept_steps(cfg) == [0, 6, 8, 12, 16, 18]
    with pytest.raises(ValueError, match="must divide"):
        kept_steps(DistillJobConfig(out="x", teacher_steps=24, distill={"steps": 5}))


def test_render_refuses_trajectories_of_a_diffusers_model(tiny_pipelines, tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "prompt": "a red square moving right"}) + "\n")
    with pytest.raises(ValueError, match="trajectory_steps"):
        render(RenderConfig(manifest=str(manifest), model=str(tiny_pipelines["wan"]), out=str(tmp_path / "o"),
                            trajectory_steps=[0]))


@pytest.mark.slow
def test_distill_renders_exact_teacher_trajectories_and_writes_a_k_step_student(ray_cluster, micro_model_dir,
                                                                              tmp_path):
    from vidgen.pipelines.load import load_pipeline
    from vidgen.pipelines.options import PipelineOptions

    folder, _ = micro_model_dir
    out = tmp_path / "student"
    # float32: in bfloat16 (auto on CPUs with bf16 matmuls) a batch of 4 and a batch of 1 round apart by ~1e-2
    cfg = DistillJobConfig(teacher=str(folder), out=str(out), trajectories=12, teacher_steps=4, eval_clips=2,
                           perceptual_clips=2, batch_size=4, teacher_dtype="float32",
                           distill={"steps": 2, "train_steps": 6, "batch_size": 4})
    renders, steps = [], []
    summary = run_distill(cfg, on_render=lambda done, total: renders.append((done, total)),
                          on_train=lambda step, loss: steps.append(step))
    assert summary["trajectories"] == 12 and renders[-1] == (12, 12) and steps == list(range(1, 7))

    work = tmp_path / "student.trajectories"
    record = json.loads((work / "results.jsonl").read_text().splitlines()[3])
    with np.load(io.BytesIO((work / "trajectories" / f"{record['id']}.npz").read_bytes()), allow_pickle=False) as npz:
        assert npz["steps"].tolist() == [0, 1, 2, 3]
        states, x0 = npz["states"], npz["x0"]
    teacher = load_pipeline(str(folder), options=PipelineOptions(dtype="float32"))
    clip = next(c for c in _resolved(teacher, record))
    direct = teacher.generate([clip], keep_steps=(0, 1, 2, 3))
    assert np.allclose(states, torch.stack([direct.states[s][0] for s in range(4)]).numpy(), atol=1e-4)
    assert np.allclose(x0, direct.x0[0].numpy(), atol=1e-4)

    verify_package(out)
    student = load_pipeline(str(out))
    assert (student.capabilities.steps, student.capabilities.guidance) == (2, 1.0)
    meta, body = parse_card((out / "card.md").read_text())
    assert meta["steps"] == 2 and meta["lineage"]["trajectories"] == 12 and meta["lineage"]["seed"] == 0
    assert meta["lineage"]["teacher"]["digest"] in body and meta["lineage"]["git_commit"]
    lineage = json.loads((out / "config.json").read_text())["distilled_from"]
    assert lineage == meta["lineage"]  # config.json and the card record one lineage
    assert lineage["teacher"]["digest"] == verify_package(folder)["model.safetensors"]
    evals = json.loads((out / "evals.json").read_text())
    assert {"teacher", "student"} <= evals.keys()
    assert {"fd_frames", "fvd_vidgen", "subject_consistency"} <= evals["student"]["perceptual"].keys()


def _resolved(pipeline, record):
    from vidgen.clip_request import ClipRequest, resolve_clip

    clip, problems = resolve_clip(ClipRequest(prompt=record["prompt"], seed=record["seed"], steps=record["steps"],
                                              guidance=record["guidance"]), pipeline.capabilities)
    assert not problems
    yield clip


def test_cli_refuses_a_step_count_off_the_teacher_grid_before_rendering(tmp_path):
    from typer.testing import CliRunner

    from vidgen.cli import app

    result = CliRunner().invoke(app, ["distill", "--out", str(tmp_path / "s"), "--steps", "5"])
    assert result.exit_code == 1 and "must divide the teacher's (24)" in result.output
    assert not (tmp_path / "s.trajectories").exists()
