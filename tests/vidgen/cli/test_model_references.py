"""Issue 29, item 2: every command that takes a model takes every kind of model reference, from any folder:
`vidgen models push shapes-tiny shapes` pushes the shipped model, and a registry reference pushes that version."""

from typer.testing import CliRunner

from storage.registry import list_models
from vidgen.cli import app


def test_push_takes_a_shipped_name_and_a_registry_reference_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = str(tmp_path / "registry")
    runner = CliRunner()
    shipped = runner.invoke(app, ["models", "push", "shapes-tiny", "shapes", "--root", root])
    assert shipped.exit_code == 0, shipped.output
    assert shipped.output.count("pushed shapes-tiny as shapes@v1") == 1
    copied = runner.invoke(app, ["models", "push", f"{root}/shapes@v1", "copy", "--root", root])
    assert copied.exit_code == 0, copied.output
    assert list_models(root) == {"copy": ["v1"], "shapes": ["v1"]}


def test_push_of_something_that_is_no_model_names_what_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["models", "push", "runs/nothing-here", "x", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "is neither a folder, a shipped model (shapes-tiny, shapes-tiny-k1) nor a registry" in result.output
