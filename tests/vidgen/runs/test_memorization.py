"""The memorization check both ways: a model overfit on four clips is flagged (in its card, written by training),
the shipped model is not."""

from __future__ import annotations

import json

import pytest
import yaml

from benchmarks.backdoor import planted_clips, write_planted_dataset
from storage.objectstore import ObjectStore
from vidgen.runs.memorization import EXTRACTION_BITS, memorization_report


def _dataset(folder, clips: int) -> str:
    uri = str(folder / "data")
    write_planted_dataset(ObjectStore(), uri, planted_clips(clips, 2, 0.0, seed=3))
    return uri


@pytest.mark.slow
def test_a_model_overfit_on_four_clips_is_flagged_in_its_card(tmp_path, encoder):
    from vidgen.runs.local_training import train_to_folder
    from vidgen.training import TrainConfig

    uri = _dataset(tmp_path, 4)
    # the shipped autoencoder, a micro transformer, 600 steps at 3x the default learning rate on the same 4 clips
    # (~30 s on 2 cores), no EMA: it copies them as closely as 1500 steps at the default rate did (median nearest
    # 45 bits of 192 against 46; 3 of 4 extracted either way), where twice this rate no longer converges
    cfg = TrainConfig(model={"dim": 48, "depth": 2, "heads": 2}, max_steps=600, lr=3e-3, batch_size=4,
                      warmup_steps=10, ema_decay=0, eval_clips=4, torch_threads=1, memorization_clips=4)
    train_to_folder(cfg, tmp_path / "model", encoder=encoder, final_eval_clips=0, data=uri, autoencoder="shapes-tiny")
    report = json.loads((tmp_path / "model" / "evals.json").read_text())["memorization"]
    card = (tmp_path / "model" / "card.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert "## Memorization (privacy)" in card and "**It memorizes its training clips**" in card
    assert header["metrics"]["memorization_extracted_share_training_captions"] == \
        report["training_captions"]["extracted_share"]
    assert report["memorizes"]
    assert report["training_captions"]["extracted_share"] >= 0.5
    assert report["training_captions"]["median_phash_bits"] <= EXTRACTION_BITS
    assert report["heldout_prompts"]["extracted_share"] == 0.0  # it copies what it was shown, not anything


def test_the_shipped_model_is_not_flagged(tmp_path):
    report = memorization_report(None, _dataset(tmp_path, 16), clips=4)
    assert not report["memorizes"]
    assert report["training_captions"]["extracted_share"] == 0.0
    assert report["training_captions"]["near_duplicate_share"] == 0.0
    assert report["training_captions"]["median_phash_bits"] > EXTRACTION_BITS + 8
