"""Shared fixtures: the text encoder (loaded once, ~4 s), a micro model config and a briefly trained model folder."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# A model far smaller than `tiny` (same world, same code paths) so unit tests stay fast.
MICRO = {"dim": 48, "depth": 2, "heads": 2, "ae_channels": 8}


@pytest.fixture(scope="session")
def encoder():
    from vidgen.text import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def micro_config():
    from vidgen.model import ModelConfig

    return ModelConfig(**MICRO)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, encoder):
    """A micro model trained for 40 steps and written as a model folder by the real pipeline."""
    from vidgen.pipelines import train_to_folder
    from vidgen.training import SamplerConfig, TrainConfig

    cfg = TrainConfig(model=MICRO, max_steps=40, batch_size=8, warmup_steps=5, eval_clips=4, autoencoder_steps=30,
                      sampler=SamplerConfig(steps=4))
    out = tmp_path_factory.mktemp("micro-model")
    summary = train_to_folder(cfg, out, encoder=encoder)
    return out, summary
