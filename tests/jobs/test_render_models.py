"""A re-run of a bulk render on one OUT with another model, or other settings, renders every row again: a record
counts as done only for the request (model label with its weights digest, every resolved setting) it names, and
distillation reads only its own teacher's trajectories. On a real local Ray (the render driver and its actors)."""

import hashlib
import json
import shutil

import pytest

from jobs.render import RenderConfig, render
from storage.objectstore import ObjectStore
from vidgen.runs.distillation import load_trajectories, manifest_ids

ROWS = [{"id": f"r{i}", "prompt": p, "seed": i} for i, p in enumerate(
    ["a red square moving right", "a green circle moving down", "a blue triangle moving left"])]


@pytest.fixture
def two_models(micro_model_dir, tmp_path):
    """The micro model and another model (its copy under another name: runs name it otherwise)."""
    folder, _ = micro_model_dir
    other = tmp_path / "other-model"
    shutil.copytree(folder, other)
    return folder, other


def _render(manifest, out, model, **kw) -> dict:
    return render(RenderConfig(manifest=str(manifest), model=str(model), out=str(out), batch_size=3, actors=1,
                               **{"steps": 2, **kw}))


def _ledger(out) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_a_re_run_with_another_model_or_settings_renders_every_row_again(ray_cluster, two_models, tmp_path):
    first_model, second_model = two_models
    manifest, out = tmp_path / "m.jsonl", tmp_path / "out"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    first = _render(manifest, out, first_model)
    assert (first["rendered_now"], first["already_done"]) == (3, 0)

    second = _render(manifest, out, second_model)
    assert (second["rendered_now"], second["already_done"], second["replaced"]) == (3, 0, 3)
    run = json.loads((out / "run.json").read_text())
    assert run["model"].startswith("other-model#") and run["rendered_now"] == 3
    records = _ledger(out)
    assert [r["id"] for r in records] == [r["id"] for r in ROWS]
    assert all(r["model"] == run["model"] for r in records)  # only the second model's records
    for record in records:  # each record vouches for the video beside it
        assert record["sha256"] == hashlib.sha256((out / record["key"]).read_bytes()).hexdigest()
        assert record == json.loads((out / "results" / f"{record['id']}.json").read_text())

    again = _render(manifest, out, second_model)
    assert (again["rendered_now"], again["already_done"]) == (0, 3)
    other_steps = _render(manifest, out, second_model, steps=3)
    assert (other_steps["rendered_now"], other_steps["already_done"]) == (3, 0)
    assert all(r["steps"] == 3 for r in _ledger(out))


def test_distillation_reads_only_its_own_teachers_rows(ray_cluster, two_models, encoder, tmp_path):
    first_model, second_model = two_models
    manifest, work = tmp_path / "m.jsonl", tmp_path / "work"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    summary = _render(manifest, work, first_model, trajectory_steps=[0])
    ids = manifest_ids(manifest.read_bytes())
    store = ObjectStore()
    assert len(load_trajectories(store, str(work), encoder, 2, summary["model"], ids[:2])) == 2  # its rows only
    with pytest.raises(ValueError, match="not by the teacher other-model"):
        load_trajectories(store, str(work), encoder, 2, summary["model"].replace("micro", "other"), ids)
    with pytest.raises(ValueError, match="at 2 steps, not by the teacher .* at 3"):
        load_trajectories(store, str(work), encoder, 3, summary["model"], ids)
