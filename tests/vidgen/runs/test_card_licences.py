"""Issue 29, item 6: a model card's licence comes from its training data's licences (one licence: that one; several:
`other`, each named), a model of the built-in world keeps vidgen's own, and the card's first and last loss are the
numbers the console prints."""

from storage.cards import Lineage, parse_card
from vidgen.model import VideoDiT
from vidgen.runs.cards import dataset_licences, model_licence, trained_model_card
from vidgen.training import TrainConfig

METRICS = {"first_loss": 1.0, "final_loss": 0.5, "autoencoder_mse": 0.01}


def _card(micro_config, source: dict) -> tuple[dict, str]:
    lineage = Lineage("vidgen train --data ...", 0, source)
    text = trained_model_card(VideoDiT(micro_config), TrainConfig(), lineage, METRICS, {}, "made in a test")
    return parse_card(text)


def test_a_model_of_cc0_clips_is_licensed_cc0_and_of_mixed_clips_other(micro_config):
    meta, body = _card(micro_config, {"dataset": "s3://b/clips", "dataset_licences": {"cc0-1.0": 12}})
    assert meta["license"] == "cc0-1.0" and "Every training clip is licensed cc0-1.0 (12 clips)" in body
    meta, body = _card(micro_config, {"dataset": "s3://b/clips", "dataset_licences": {"cc0-1.0": 8, "cc-by-4.0": 4}})
    assert meta["license"] == "other" and "licences differ: cc-by-4.0 (4 clips), cc0-1.0 (8 clips)" in body


def test_the_licence_of_a_data_set_is_read_from_its_card():
    assert dataset_licences({"license": "other", "licences": {"cc0-1.0": 3, "mit": 2}}, 5) == {"cc0-1.0": 3, "mit": 2}
    assert dataset_licences({"license": "cc0-1.0"}, 40) == {"cc0-1.0": 40}  # a prepared (synthetic) set
    assert model_licence(None) == "apache-2.0" and model_licence({"cc0-1.0": 40}) == "cc0-1.0"


def test_the_cards_losses_are_the_ones_the_run_reports(micro_model_dir):
    folder, summary = micro_model_dir
    meta, _ = parse_card((folder / "card.md").read_text())
    assert meta["license"] == "apache-2.0"  # the built-in world
    assert (meta["metrics"]["first_loss"], meta["metrics"]["final_loss"]) == (
        round(summary["first_loss"], 5), round(summary["last_loss"], 5))
