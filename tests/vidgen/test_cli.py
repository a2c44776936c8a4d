import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from storage import video
from vidgen.cli import app

runner = CliRunner()


def test_help_is_fast_and_lists_commands():
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "vidgen.cli", "--help"],
                         capture_output=True, text=True, check=True)
    for command in ("train", "generate", "eval", "demo"):
        assert command in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time")}
    assert "typer" in imported and "torch" not in imported and "ray" not in imported


def test_micro_training_writes_a_complete_model_folder_and_loss_falls(micro_model_dir):
    folder, summary = micro_model_dir
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "card.md", "SHA256SUMS", "metrics.csv", "evals.json",
            "loss_curve.png", "samples.png"} <= names
    assert summary["last_loss"] < 0.7 * summary["first_loss"]
    card = (folder / "card.md").read_text()
    assert card.startswith("---\npipeline_tag: text-to-video") and "prompt_accuracy_heldout" in card
    assert set(summary["final"]) == {"seen", "heldout", "paraphrase"}


def test_generate_writes_mp4_and_gif(micro_model_dir, tmp_path):
    folder, _ = micro_model_dir
    for name in ("clip.mp4", "clip.gif"):
        result = runner.invoke(app, ["generate", "a blue square moving up", "--model", str(folder), "--seed", "3",
                                     "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        clip = video.decode((tmp_path / name).read_bytes())
        assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    assert "detector reads" in result.output


@pytest.mark.parametrize("args, message", [
    (["generate", "  ", "--out", "x.mp4"], "prompt: String should have at least 1 character"),
    (["generate", "a red ball moving up", "--out", "x.avi"], ".mp4 or .gif"),
    (["generate", "a red ball moving up", "--frames", "16", "--out", "x.mp4"], "frames=16 cannot be made"),
    (["generate", "a red ball moving up", "--model", "no-such-model"], "neither a folder, a shipped model"),
    (["generate", "a red ball moving up", "--steps", "0", "--out", "x.mp4"], "greater than or equal to 1"),
    (["train", "--preset", "huge"], "unknown preset 'huge'"),
    (["train", "--set", "bogus=1"], "bogus"),
])
def test_bad_input_gets_a_clear_error(args, message, micro_model_dir, tmp_path, monkeypatch):
    folder, _ = micro_model_dir
    monkeypatch.chdir(tmp_path)
    if args[0] == "generate" and "--model" not in args:
        args = [*args, "--model", str(folder)]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert message in result.output


def test_model_without_weights_or_with_wrong_hash_is_refused(micro_model_dir, tmp_path):
    import shutil

    folder, _ = micro_model_dir
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "config.json").write_text((broken / "config.json").read_text().replace('"depth": 2', '"depth": 3'))
    result = runner.invoke(app, ["eval", "--model", str(broken), "--clips", "2"])
    assert result.exit_code == 1 and "config.json does not match" in result.output
    (broken / "model.safetensors").unlink()
    result = runner.invoke(app, ["generate", "a red ball moving up", "--model", str(broken)])
    assert result.exit_code == 1 and "has no model.safetensors" in result.output


def test_eval_json_reports_three_splits_and_the_perceptual_metrics(micro_model_dir):
    folder, _ = micro_model_dir
    result = runner.invoke(app, ["eval", "--model", str(folder), "--clips", "3", "--steps", "2", "--perceptual", "3",
                                 "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for split in ("seen", "heldout", "paraphrase"):
        assert report[split]["n"] == 3 and 0.0 <= report[split]["all_three"] <= 1.0
    perceptual = report["perceptual"]
    assert perceptual["clips"] == 3 and perceptual["video_features"].startswith("fvd-vidgen@v1#")
    # a micro model trained 40 steps is far from the world: every distance is well above zero
    assert perceptual["fd_frames"] > 1 and perceptual["fvd_vidgen"] > 0.1
    assert 0 < perceptual["subject_consistency"] <= 1 and 0 < perceptual["flicker"] <= 1
    assert perceptual["psnr"] > 0 and -1 <= perceptual["ssim"] <= 1


def test_train_dry_run_prints_the_resolved_config():
    result = runner.invoke(app, ["train", "--dry-run", "--minutes", "3", "--set", "lr=0.0005"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert cfg["max_minutes"] == 3.0 and cfg["lr"] == 0.0005
