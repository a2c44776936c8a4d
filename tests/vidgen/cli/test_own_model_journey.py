"""Issue 29: README's "bring your own model" journey, run as a newcomer would from a folder that is not the
repository's: save a pipeline with examples/tiny_pipelines.py, `vidgen models import` it, render with it, promote it
(forced: no quality measure exists for it), and render by alias. Exit codes, outputs, run.json's times, and no
traceback or temporary path on the console. Reuses the session's Ray cluster."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidgen.cli import app

SCRIPT = Path(__file__).resolve().parents[3] / "examples" / "tiny_pipelines.py"
ISO_WITH_ZONE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$")


@pytest.mark.slow
def test_import_render_promote_and_render_by_alias_from_another_folder(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VIDGEN_REGISTRY", str(tmp_path / "registry"))
    saved = subprocess.run([sys.executable, str(SCRIPT), "wan", "my-wan"], capture_output=True, text=True,
                           timeout=300, check=True)
    assert saved.stderr == "" and f"to {tmp_path / 'my-wan'}" in saved.stdout  # no torchao or pytree chatter
    runner = CliRunner()

    imported = runner.invoke(app, ["models", "import", "my-wan", "tiny-wan", "--licence", "apache-2.0"])
    assert imported.exit_code == 0, imported.output
    assert "vidgen-import-" not in imported.output and imported.output.count("tiny-wan@v1") == 1

    refused = runner.invoke(app, ["models", "promote", "tiny-wan@v1", "--to", "production"])
    assert refused.exit_code == 3 and "no quality measure exists for v1" in refused.output
    forced = runner.invoke(app, ["models", "promote", "tiny-wan@v1", "--to", "production", "--force"])
    assert forced.exit_code == 0, forced.output

    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": "cat", "prompt": "a cat", "seed": 1}) + "\n")
    # by the alias's full reference: the session's Ray workers were started before VIDGEN_REGISTRY was set here
    by_alias = f"{tmp_path / 'registry' / 'tiny-wan'}@production"
    rendered = runner.invoke(app, ["render", "rows.jsonl", "--model", by_alias, "--out", "out",
                                   "--frames", "5", "--height", "16", "--width", "16", "--steps", "1",
                                   "--actors", "1"])
    assert rendered.exit_code == 0, rendered.output
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model"].startswith("tiny-wan@v1#") and run["rendered_now"] == 1
    assert ISO_WITH_ZONE.match(run["started"]) and ISO_WITH_ZONE.match(run["finished"])
    for result in (imported, refused, forced, rendered):
        assert "Traceback" not in result.output
