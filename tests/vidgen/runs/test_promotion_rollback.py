"""The promotion gate records who passed it, a rollback goes to the newest version that did (rolling back twice
does not re-promote the bad version: the issue's v2 -> v1 -> v2), `vidgen models rollback` names its target before
it moves, and a candidate the gate has no quality measure for (a diffusers model) is refused unless forced."""

import shutil

import pytest
from typer.testing import CliRunner

from storage.aliases import history
from storage.objectstore import StorageError
from storage.registry import push
from vidgen.cli import app
from vidgen.pipelines.references import resolve_model
from vidgen.runs.promotion import Gate, GateRefused, gate_problems, promote, rollback

LENIENT = Gate(slowdown=100.0)  # two copies of one model: only accuracy may decide, not a busy machine's timing


@pytest.fixture
def registry(tmp_path):
    """shapes@v1, v2 and v3: the shipped model three times (each passes the gate against the others)."""
    root = tmp_path / "registry"
    shipped = shutil.copytree(resolve_model("shapes-tiny"), tmp_path / "shipped")
    for _ in range(3):
        push(shipped, f"{root}/shapes")
    return str(root)


def test_rolling_back_twice_goes_to_gated_versions_only(registry):
    for version in ("v1", "v2"):
        promote("shapes", version, "production", "release", root=registry, clips=2, gate=LENIENT)
    first = rollback("shapes", "production", "v2 misbehaves", root=registry)
    assert (first.version, first.previous) == ("v1", "v2")
    with pytest.raises(StorageError, match="names v1 and has no other version that passed the promotion gate"):
        rollback("shapes", "production", "and again", root=registry)
    records = history(f"file://{registry}/shapes", "production")
    assert [(r.version, r.kind, r.passed_gate) for r in records] == [
        ("v1", "promote", True), ("v2", "promote", True), ("v1", "rollback", False)]


def test_the_cli_names_the_rollback_target_before_it_moves(registry):
    for version in ("v1", "v2", "v3"):
        promote("shapes", version, "staging", "release", root=registry, clips=2, gate=LENIENT)
    runner = CliRunner()
    declined = runner.invoke(app, ["models", "rollback", "shapes", "--alias", "staging", "--root", registry],
                             input="n\n")
    assert declined.exit_code == 1
    assert "shapes@staging names v3 (revision 3); a rollback moves it to v2" in declined.output
    assert history(f"file://{registry}/shapes", "staging")[-1].version == "v3"  # nothing moved
    moved = runner.invoke(app, ["models", "rollback", "shapes", "--alias", "staging", "--root", registry, "--yes"])
    assert moved.exit_code == 0, moved.output
    assert moved.output.index("moves it to v2") < moved.output.index("shapes@staging -> v2 (was v3), revision 4")
    listed = runner.invoke(app, ["models", "history", "shapes", "--root", registry])
    assert "staging r1: - -> v1  promote by" in listed.output and "(passed the gate)" in listed.output


def test_a_candidate_without_a_quality_measure_is_refused_without_force():
    speed_only = {"version": "v2", "seconds_per_clip": 1.0}
    incumbent = {"version": "v1", "prompt_accuracy": {"seen": 0.99, "heldout": 0.97}, "seconds_per_clip": 1.0}
    for against in (incumbent, None):
        assert gate_problems(speed_only, against, Gate()) == [
            "no quality measure exists for v2: the gate's one quality measure, prompt accuracy, scores vidgen "
            "models trained on the built-in world only, and speed alone passes no model"]




def test_a_diffusers_candidate_is_refused_before_anything_renders(registry, tiny_pipelines, tmp_path):
    from vidgen.pipelines.model_import import import_diffusers_folder

    push(import_diffusers_folder(tiny_pipelines["wan"], tmp_path / "pkg", licence="apache-2.0"), f"{registry}/shapes")
    promote("shapes", "v1", "production", "release", root=registry, clips=2, gate=LENIENT)
    # (the tiny Wan cannot even render at its default shape, so an evaluation would fail instead of this refusal)
    with pytest.raises(GateRefused, match=r"^shapes@v4 cannot pass the gate for shapes@production: no quality "
                                          r"measure exists for v4: .*speed alone passes no model\. Nothing moved"):
        promote("shapes", "v4", "production", "try it", root=registry, clips=2, gate=LENIENT)
    assert [r.version for r in history(f"file://{registry}/shapes", "production")] == ["v1"]
