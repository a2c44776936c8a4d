"""Bulk render with a diffusers pipeline (a tiny Wan folder, as a user's script saved it) on the local Ray cluster:
rows within the model's declared sizes render, others are that row's error, re-renders are byte-identical, and
run.json names the pipeline class and package version."""

import hashlib
import json

from typer.testing import CliRunner

from jobs.render import RenderConfig, plan_batches, render
from storage.registry import push
from vidgen.cli import app
from vidgen.manifest import parse_manifest
from vidgen.pipelines.load import describe_model
from vidgen.pipelines.model_import import import_diffusers_folder

ROWS = [
    {"id": "plain", "prompt": "a red square moving left", "seed": 1},
    {"id": "negative", "prompt": "a dog at night", "negative_prompt": "blurry, low quality", "seed": 2},
    {"id": "defaults", "prompt": "a cat"},
    {"id": "longer", "prompt": "a city", "frames": 13, "seed": 3},
    {"id": "wide", "prompt": "the sea", "height": 16, "width": 48, "steps": 1},
    {"id": "eight-frames", "prompt": "a cat", "frames": 8},  # Wan makes 4k+1 frames
    {"id": "odd-size", "prompt": "a cat", "height": 40},  # and multiples of 16 pixels
]


def digests(out) -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((out / "videos").iterdir())}


def test_planning_batches_rows_by_shape_and_settings(tiny_pipelines):
    caps = describe_model(tiny_pipelines["wan"]).capabilities
    rows, _ = parse_manifest("\n".join(json.dumps(r) for r in ROWS).encode(), "jsonl")
    cfg = RenderConfig(manifest="m.jsonl", frames=9, height=32, width=32, steps=2)
    batches, errors = plan_batches(rows, caps, cfg)
    assert {(e.id, e.field) for e in errors} == {("eight-frames", "frames"), ("odd-size", "height")}
    assert "4k+1" in next(e.reason for e in errors if e.field == "frames")
    shapes = sorted((b[0].clip.frames, b[0].clip.height, b[0].clip.width, b[0].clip.steps, len(b)) for b in batches)
    assert shapes == [(9, 16, 48, 1, 1), (9, 32, 32, 2, 3), (13, 32, 32, 2, 1)]


def test_a_diffusers_folder_renders_through_the_cli_and_re_renders_identically(ray_cluster, tiny_pipelines,
                                                                                 tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    registry = tmp_path / "registry"
    package = import_diffusers_folder(tiny_pipelines["wan"], tmp_path / "pkg", licence="apache-2.0")
    push(package, f"{registry}/tiny-wan")
    common = ["--frames", "9", "--height", "32", "--width", "32", "--steps", "2", "--batch-size", "4"]
    first = CliRunner().invoke(app, ["render", str(manifest), "--model", str(tiny_pipelines["wan"]), "--out",
                                     str(tmp_path / "a"), "--preview", *common])
    assert first.exit_code == 2, first.output  # two rows the model cannot make
    assert "7 rows: 5 rendered now" in first.output
    errors = [json.loads(line) for line in (tmp_path / "a" / "errors.jsonl").read_text().splitlines()]
    assert {e["id"]: e["field"] for e in errors} == {"eight-frames": "frames", "odd-size": "height"}
    records = {r["id"]: r for r in map(json.loads, (tmp_path / "a" / "results.jsonl").read_text().splitlines())}
    assert records["negative"]["negative_prompt"] == "blurry, low quality"
    assert (records["longer"]["frames"], records["wide"]["width"], records["defaults"]["height"]) == (13, 48, 32)
    assert (tmp_path / "a" / "preview.png").stat().st_size > 0

    from storage.video import decode

    assert decode((tmp_path / "a" / "videos" / "longer.mp4").read_bytes()).shape == (13, 32, 32, 3)
    # the same rows from the registry copy of the same pipeline, into another OUT: the same bytes
    cfg = RenderConfig(manifest=str(manifest), model=f"{registry}/tiny-wan@latest", out=str(tmp_path / "b"),
                       frames=9, height=32, width=32, steps=2, batch_size=4)
    summary = render(cfg)
    assert summary["rendered_now"] == 5 and digests(tmp_path / "b") == digests(tmp_path / "a")
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["pipeline"]["class"] == "WanPipeline" and run["pipeline"]["backend"] == "diffusers"
    assert run["model"].startswith("tiny-wan@v1#") and run["config"]["pipeline"]["dtype"] == "auto"
