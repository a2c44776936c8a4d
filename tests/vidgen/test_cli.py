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


@pytest.mark.parametrize("args, message", [
    (["render", "m.jsonl", "--set", "batch_sise=3"], "batch_sise: unknown field; did you mean 'batch_size'?"),
    (["data", "prepare", "--out", "x", "--n", "0"], "n: Input should be greater than or equal to 1"),
    (["data", "ingest", "v", "--captions", "c.csv", "--out", "o", "--config", "missing.yaml"],
     "config file missing.yaml does not exist"),
    (["distill", "--out", "s", "--set", "distill.stepz=2"], "distill.stepz: unknown field; did you mean 'steps'?"),
    (["train", "--workers", "2", "--zero", "7", "--dry-run"], "zero_stage: Input should be less than or equal to 3"),
])
def test_a_bad_config_is_one_line_naming_the_key_before_anything_starts(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1


def test_train_config_is_the_file_then_each_set_then_the_flags(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("lr: 0.002\nseed: 1\nmax_steps: 7\n")
    result = runner.invoke(app, ["train", "--dry-run", "--config", str(config), "--set", "seed=2",
                                 "--set", "max_steps=8", "--steps", "9"])
    assert result.exit_code == 0, result.output
    cfg = json.loads(result.stdout)
    assert (cfg["lr"], cfg["seed"], cfg["max_steps"]) == (0.002, 2, 9)


def test_expected_errors_end_a_command_in_one_line_and_bugs_keep_their_traceback(capsys):
    import typer
    from pydantic import BaseModel, ValidationError

    from storage.objectstore import StorageError
    from vidgen.cli._common import one_line_errors

    def command(error: Exception) -> None:
        raise error

    class Config(BaseModel):
        n: int

    with pytest.raises(ValidationError) as invalid:
        Config(n="many")
    expecting = one_line_errors(RuntimeError, ValueError)(command)
    for error, line in ((StorageError("s3://b/k does not exist"), "s3://b/k does not exist"),
                        (RuntimeError("Request failed with status code 404\nserver body"),
                         "Request failed with status code 404"),
                        (invalid.value, "n: Input should be a valid integer, unable to parse string as an integer")):
        with pytest.raises(typer.Exit) as ended:
            expecting(error)
        assert ended.value.exit_code == 1 and capsys.readouterr().err == f"error: {line}\n"
    with pytest.raises(typer.Exit) as ended:  # a RuntimeError, but how a command ends on purpose
        expecting(typer.Exit(2))
    assert ended.value.exit_code == 2
    project_errors_only = one_line_errors()(command)
    for bug in (ValueError("a bug"), RuntimeError("a bug"), KeyError("a bug")):
        with pytest.raises(type(bug), match="a bug"):
            project_errors_only(bug)
    with pytest.raises(typer.Exit):
        project_errors_only(StorageError("s3://b/k does not exist"))
