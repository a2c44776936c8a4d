"""Bulk render on a real local Ray cluster: bad rows isolated, exactly once after a kill, identical re-renders."""

import hashlib
import json
import os
import time
import uuid

import pytest

from jobs.render import RenderConfig, Renderer, render
from storage.objectstore import ObjectStore

GOOD = [{"id": f"clip-{i:02d}", "prompt": p} for i, p in enumerate([
    "a red square moving right", "a green circle moving down", "a blue triangle moving left",
    "a yellow square moving up", "a magenta circle moving left", "a cyan triangle moving right",
    "a red circle moving up", "a blue square moving down"])]
BAD = [
    '{"id": "no-prompt"}',  # line 9
    '{"id": "neg", "prompt": "a red square", "frames": -8}',  # 10
    '{"id": "extra", "prompt": "a red square", "colour": "red"}',  # 11
    '{"id": "broken", "prompt": ',  # 12
    '{"id": "twice", "prompt": "a red square"}',  # 13
    '{"id": "twice", "prompt": "a blue square"}',  # 14
    '{"id": "big", "prompt": "a red square", "frames": 16}',  # 15: the model makes 8 frames
    json.dumps({"id": "long", "prompt": " ".join(["a very long prompt"] * 12)}),  # 16: too many tokens
]
BAD_LINES = {9, 10, 11, 12, 13, 14, 15, 16}


@pytest.fixture
def manifest(tmp_path):
    path = tmp_path / "manifest.jsonl"
    path.write_text("\n".join([json.dumps(r) for r in GOOD] + BAD) + "\n")
    return path


def _cfg(manifest, out, model_dir, **kw) -> RenderConfig:
    return RenderConfig(manifest=str(manifest), model=str(model_dir), out=out, batch_size=3, steps=2, **kw)


def test_good_rows_render_once_and_every_bad_row_is_reported(ray_cluster, micro_model_dir, manifest, tmp_path,
                                                             monkeypatch):
    folder, _ = micro_model_dir
    out = tmp_path / "out"
    summary = render(_cfg(manifest, str(out), folder))
    assert summary["rows"] == 16 and summary["rendered_now"] == 8 and summary["errors"] == 8
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"{r['id']}.mp4" for r in GOOD]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in results] == [r["id"] for r in GOOD]
    assert all(r["steps"] == 2 and len(r["sha256"]) == 64 and r["model"].startswith(folder.name) for r in results)
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["line"] for e in errors} == BAD_LINES
    by_line = {e["line"]: e for e in errors}
    assert by_line[15]["field"] == "frames" and by_line[16]["field"] == "prompt" and "tokens" in by_line[16]["reason"]
    run = json.loads((out / "run.json").read_text())
    assert run["videos"] == 8 and len(run["manifest_sha256"]) == 64

    reads = []
    original_read = ObjectStore.read
    monkeypatch.setattr(ObjectStore, "read", lambda self, uri: reads.append(str(uri)) or original_read(self, uri))
    again = render(_cfg(manifest, str(out), folder))  # nothing missing: nothing rendered
    assert again["rendered_now"] == 0 and again["already_done"] == 8
    assert not [uri for uri in reads if "/results/" in uri]  # the ledger came from results.jsonl, no record read
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == results



def test_a_forced_re_render_leaves_a_ledger_that_matches_the_video(ray_cluster, micro_model_dir, manifest, tmp_path):
    """The record files are the truth: results.jsonl must not keep the sha256 of a video that was replaced."""
    import hashlib

    folder, _ = micro_model_dir
    out = tmp_path / "out"
    render(_cfg(manifest, str(out), folder))
    target = GOOD[0]["id"]
    (out / "videos" / f"{target}.mp4").unlink()  # force a re-render of one row, with other settings
    (out / "results" / f"{target}.json").unlink()
    again = render(RenderConfig(manifest=str(manifest), model=str(folder), out=str(out), batch_size=3, steps=3))
    assert again["rendered_now"] == 8  # other settings: every row is rendered again, not only the missing one
    ledger = {r["id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    video = (out / "videos" / f"{target}.mp4").read_bytes()
    assert ledger[target]["steps"] == 3 and ledger[target]["sha256"] == hashlib.sha256(video).hexdigest()
    assert ledger[target] == json.loads((out / "results" / f"{target}.json").read_text())

def test_a_killed_run_resumes_to_every_good_row_exactly_once_on_s3(ray_cluster, micro_model_dir, manifest,
                                                                    s3_config, tmp_path):
    folder, _ = micro_model_dir
    out = f"s3://render-{uuid.uuid4().hex[:10]}/out"

    class DiesAfterOneBatch(Renderer):  # defined here, so it travels to the actor by value
        def __call__(self, batch):
            result = super().__call__(batch)
            os._exit(1)  # the actor process dies as a lost node would, after writing its first batch
            return result

    with pytest.raises(Exception, match="(?i)actor|died|worker"):  # not restarted: the job fails
        render(_cfg(manifest, out, folder, s3=s3_config, actors=1), renderer=DiesAfterOneBatch,
               actor_options={"max_restarts": 0})
    store = ObjectStore(s3_config)
    assert len(store.list(f"{out}/videos")) == 3 and not store.exists(f"{out}/results.jsonl")  # one batch of 3
    summary = render(_cfg(manifest, out, folder, s3=s3_config))
    assert summary["already_done"] + summary["rendered_now"] == 8
    keys = [o.uri.removeprefix(f"{out}/") for o in store.list(f"{out}/videos")]
    assert keys == [f"videos/{r['id']}.mp4" for r in GOOD]
    ledger = [json.loads(line) for line in store.read(f"{out}/results.jsonl").decode().splitlines()]
    assert sorted(r["id"] for r in ledger) == [r["id"] for r in GOOD]  # each once
    assert all(store.exists(f"{out}/{r['key']}") for r in ledger)

    other = tmp_path / "again"  # the same row and seed render byte-identical videos
    render(_cfg(manifest, str(other), folder))
    for record in ledger:
        assert (other / record["key"]).read_bytes() == store.read(f"{out}/{record['key']}")



def test_two_runs_on_one_out_render_each_row_once_and_agree(ray_cluster, micro_model_dir, manifest, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    folder, _ = micro_model_dir
    out = tmp_path / "out"
    cfg = RenderConfig(manifest=str(manifest), model=str(folder), out=str(out), batch_size=2, steps=2, actors=1)
    with ThreadPoolExecutor(2) as pool:
        first, second = [f.result() for f in [pool.submit(render, cfg), pool.submit(render, cfg)]]
    assert first["rendered_now"] + second["rendered_now"] == len(GOOD)  # every row sampled by one run only
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"{r['id']}.mp4" for r in GOOD]
    ledger = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in ledger] == [r["id"] for r in GOOD]
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["line"] for e in errors} == BAD_LINES  # no row the other run rendered is left as an error
    assert not list((out / "claims").iterdir())


def test_a_video_left_without_its_record_is_kept_whatever_a_re_render_makes(ray_cluster, micro_model_dir, manifest,
                                                                            tmp_path):
    """A run dies between a video and its record; the next run, batched differently, must not turn the row into
    an error just because it would render other bytes."""
    folder, _ = micro_model_dir
    out = tmp_path / "out"

    class DiesAfterItsFirstVideo(Renderer):  # defined here, so it travels to the actor by value
        def _write(self, planned, data, claim):
            digest = super()._write(planned, b"bytes only the dead run made" + data, claim)
            os._exit(1)
            return digest

    with pytest.raises(Exception, match="(?i)actor|died|worker"):
        render(_cfg(manifest, str(out), folder, actors=1, claim_timeout_s=1), renderer=DiesAfterItsFirstVideo,
               actor_options={"max_restarts": 0})
    [left] = list((out / "videos").iterdir())
    assert not (out / "results").exists() and (out / "claims" / f"{left.stem}.json").exists()
    time.sleep(1.5)  # the dead run's claims expire
    summary = render(RenderConfig(manifest=str(manifest), model=str(folder), out=str(out), batch_size=5, steps=2,
                                  claim_timeout_s=1))
    assert summary["rendered_now"] == len(GOOD) and summary["errors"] == len(BAD_LINES)
    record = json.loads((out / "results" / f"{left.stem}.json").read_text())
    assert record["sha256"] == hashlib.sha256(left.read_bytes()).hexdigest()  # the video it left, kept
    assert left.read_bytes().startswith(b"bytes only the dead run made")

def test_cli_exit_status_says_whether_every_row_rendered(ray_cluster, micro_model_dir, manifest, tmp_path):
    from typer.testing import CliRunner

    from vidgen.cli import app

    folder, _ = micro_model_dir
    runner = CliRunner()
    partial = runner.invoke(app, ["render", str(manifest), "--model", str(folder), "--out", str(tmp_path / "a"),
                                  "--batch-size", "4"])
    assert partial.exit_code == 2 and "8 not rendered (see errors.jsonl)" in partial.output
    clean = tmp_path / "clean.csv"
    clean.write_text("\ufeffid,prompt,seed\nx1,a red square moving up,5\nx2,a blue circle moving left,\n",
                     encoding="utf-8")
    ok = runner.invoke(app, ["render", str(clean), "--model", str(folder), "--out", str(tmp_path / "b")])
    assert ok.exit_code == 0, ok.output
    assert sorted(p.name for p in (tmp_path / "b" / "videos").iterdir()) == ["x1.mp4", "x2.mp4"]
    missing = runner.invoke(app, ["render", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "c")])
    assert missing.exit_code == 1 and "nope.jsonl does not exist" in missing.output


@pytest.mark.slow
def test_the_make_demo_manifest_renders_all_but_its_two_bad_rows(ray_cluster, tmp_path, monkeypatch):
    """What `make demo` runs: examples/manifest.jsonl with the shipped model, a preview sheet."""
    from pathlib import Path

    from typer.testing import CliRunner

    from vidgen.cli import app

    manifest = Path(__file__).resolve().parents[2] / "examples" / "manifest.jsonl"
    reads = []
    original_read = ObjectStore.read
    monkeypatch.setattr(ObjectStore, "read", lambda self, uri: reads.append(str(uri)) or original_read(self, uri))
    result = CliRunner().invoke(app, ["render", str(manifest), "--out", str(tmp_path), "--preview"])
    assert result.exit_code == 2, result.output  # the two bad rows, on purpose
    assert "26 rows: 24 rendered now" in result.output
    errors = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["id"] for e in errors) == ["demo-bad-no-prompt", "demo-bad-size"]
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 24 and (tmp_path / "preview.png").stat().st_size > 0
    assert not [uri for uri in reads if uri.endswith(".mp4")]  # the preview came from the clips, not re-read MP4s


def test_planning_caps_steps_and_marks_the_preview_clips():
    from jobs.render import plan_batches
    from vidgen.clip_request import Capabilities
    from vidgen.manifest import parse_manifest

    caps = Capabilities(frames=8, height=32, width=32, steps=24, guidance=3.0)
    lines = [{"id": "over", "prompt": "x", "steps": 65}, {"id": "cap", "prompt": "y", "steps": 64}]
    lines += [{"id": f"r{i:02d}", "prompt": "z"} for i in range(10)]
    rows, _ = parse_manifest("\n".join(json.dumps(r) for r in lines).encode(), "jsonl")
    batches, errors = plan_batches(rows, caps, RenderConfig(manifest="m.jsonl", batch_size=4, preview=True))
    assert [(e.line, e.field) for e in errors] == [(1, "steps")] and "at most 64" in errors[0].reason
    assert sorted(len(b) for b in batches) == [1, 2, 4, 4]  # 24 steps: 10 rows in 4+4+2; 64 steps: 1
    assert sum(c.preview for b in batches for c in b) == 8
    assert all(len({c.clip.settings for c in b}) == 1 for b in batches)
