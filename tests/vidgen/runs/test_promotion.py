"""Eval-gated promotion: a worse version is refused (nothing moves), --force moves it and says so in the history,
rollback moves back; the CLI walks promote -> history -> rollback."""

import shutil

import pytest
from typer.testing import CliRunner

from storage.aliases import current, history
from storage.registry import push
from vidgen.cli import app
from vidgen.model import VideoDiT
from vidgen.pipelines.packages import load_package, save_model
from vidgen.pipelines.references import resolve_model
from vidgen.runs.promotion import GateRefused, promote, rollback


@pytest.fixture
def registry(tmp_path):
    """A registry holding shapes@v1 (the shipped model) and shapes@v2 (its architecture, untrained weights)."""
    root = tmp_path / "registry"
    good = shutil.copytree(resolve_model("shapes-tiny"), tmp_path / "good")
    package = load_package(good)
    broken = save_model(VideoDiT(package.model.config), tmp_path / "broken", card="untrained\n",
                        extra={"sampler": package.config["sampler"]})
    for folder in (good, broken):
        push(folder, f"{root}/shapes")
    return str(root)


def test_a_worse_version_is_refused_forced_and_rolled_back(registry):
    first = promote("shapes", "v1", "production", "first release", root=registry, clips=8)
    assert first.version == "v1" and first.evaluation["candidate"]["prompt_accuracy"]["seen"] >= 0.5
    with pytest.raises(GateRefused, match=r"worse than shapes@production \(v1\): prompt accuracy on seen"):
        promote("shapes", "v2", "production", "try the new one", root=registry, clips=8)
    model_uri = f"file://{registry}/shapes"
    assert current(model_uri, "production").version == "v1"  # nothing moved
    forced = promote("shapes", "v2", "production", "on purpose", force=True, root=registry, clips=8)
    assert forced.version == "v2" and forced.previous == "v1" and forced.evaluation["forced"]
    assert forced.evaluation["current"]["version"] == "v1" and forced.evaluation["problems"]
    back = rollback("shapes", "production", "v2 is broken", root=registry)
    assert (back.version, back.previous, back.kind, back.revision) == ("v1", "v2", "rollback", 3)
    assert [r.version for r in history(model_uri, "production")] == ["v1", "v2", "v1"]


def test_the_cli_promotes_lists_history_and_rolls_back(registry):
    runner = CliRunner()
    result = runner.invoke(app, ["models", "promote", "shapes@v1", "--to", "staging", "--clips", "4", "--reason",
                                 "ci passed", "--root", registry])
    assert result.exit_code == 0, result.output
    assert "shapes@staging -> v1 (was unset), revision 1" in result.output
    refused = runner.invoke(app, ["models", "promote", "shapes@v2", "--to", "staging", "--clips", "4", "--root",
                                  registry])
    assert refused.exit_code == 3 and "Nothing moved" in refused.output  # the gate said no: its own status
    assert runner.invoke(app, ["models", "rollback", "shapes", "--alias", "staging", "--root",
                               registry]).exit_code == 1  # nothing to go back to
    listed = runner.invoke(app, ["models", "history", "shapes", "--root", registry])
    assert listed.exit_code == 0 and "staging r1: - -> v1  promote by" in listed.output and "ci passed" in listed.output
