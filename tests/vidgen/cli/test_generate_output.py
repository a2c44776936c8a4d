"""Issue 29, item 6: `vidgen generate` with a model of one's own videos prints no detector line (the built-in world's
detector cannot read its clips), its progress bar counts to the model's own steps, and `train --help` speaks of
one's own videos too."""

import re
import shutil

import yaml
from typer.testing import CliRunner

from storage.cards import parse_card
from storage.package import write_sums
from vidgen.cli import app


def _own_videos_model(micro_model_dir, tmp_path):
    """The micro model, its card saying it was trained on a data set of one's own videos (sums rewritten)."""
    folder = shutil.copytree(micro_model_dir[0], tmp_path / "own")
    meta, body = parse_card((folder / "card.md").read_text())
    meta["datasets"] = [str(tmp_path / "my-clips")]
    (folder / "card.md").write_text(f"---\n{yaml.safe_dump(meta)}---\n{body}")
    write_sums(folder)
    return folder


def test_generate_with_an_own_videos_model_has_no_detector_line_and_a_bar_with_a_total(micro_model_dir, tmp_path):
    own = _own_videos_model(micro_model_dir, tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["generate", "a cat on a sofa", "--model", str(own), "--out", str(tmp_path / "a.gif")])
    assert result.exit_code == 0, result.output
    assert "detector reads" not in result.output and "None" not in result.output
    assert "4/4" in result.output and not re.search(r"\d+/\?", result.output)  # the micro model samples 4 steps
    world = runner.invoke(app, ["generate", "a red square moving left", "--model", str(micro_model_dir[0]), "--out",
                                str(tmp_path / "b.gif")])
    assert world.exit_code == 0 and "detector reads:" in world.output


def test_train_help_speaks_of_own_videos():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert "own videos" in result.output
