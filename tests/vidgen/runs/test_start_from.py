"""Fine-tuning vidgen's own model: `--start-from REF` begins from a trained model's weights, not random ones."""

import pytest
import torch
from typer.testing import CliRunner

from vidgen.cli import app
from vidgen.config import load_config
from vidgen.runs.local_training import started_weights
from vidgen.training import TrainConfig, train_local


def _tiny(steps: int, **overrides) -> TrainConfig:
    return load_config(TrainConfig, "tiny", [], {"max_steps": steps, "max_minutes": None, "batch_size": 8,
                                                 "ema_decay": 0.0, "autoencoder_steps": 2, **overrides})


def test_training_starts_from_the_models_weights_and_keeps_its_autoencoder(encoder):
    cfg = _tiny(2)
    start = started_weights("shapes-tiny", cfg)
    tuned = train_local(cfg, encoder, start=start)
    scratch = train_local(cfg, encoder)
    tuned_state = tuned.model.state_dict()
    assert tuned.autoencoder_losses == []  # stage 1 skipped: the started model's autoencoder is kept
    assert all(torch.equal(tuned_state[k], v) for k, v in start.items() if k.startswith("autoencoder."))
    moved = max((tuned_state[k] - v).abs().max().item() for k, v in start.items())
    assert 0 < moved < 0.01  # two warm-up steps move a trained model a little
    # a trained model already denoises the built-in world: its first losses are far below a fresh model's
    assert tuned.history[0]["loss"] < 0.5 * scratch.history[0]["loss"]


def test_a_model_of_another_architecture_is_refused_naming_the_fields():
    with pytest.raises(ValueError, match=r"--start-from shapes-tiny: its architecture differs from preset 'small' "
                                         r"in .*frames.*preset it was made with"):
        started_weights("shapes-tiny", load_config(TrainConfig, "tiny", [], {"preset": "small"}))


def test_start_from_is_refused_on_workers_naming_the_option():
    result = CliRunner().invoke(app, ["train", "--start-from", "shapes-tiny", "--workers", "2", "--dry-run"])
    assert result.exit_code == 2
    assert "--start-from" in result.output and "single-process" in result.output
