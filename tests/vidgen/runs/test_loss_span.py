"""Issue 29, item 6: a run's first and last loss are one number under one name on its card and its console, for
`vidgen train` and `vidgen finetune` alike: the means of its first and last 10 steps (one step's loss is noisy)."""

import pytest

from jobs.finetune import _run_summary
from jobs.finetune_config import FinetuneConfig
from storage.cards import Lineage, parse_card
from vidgen.model import VideoDiT
from vidgen.runs.cards import loss_span, loss_span_text, trained_model_card
from vidgen.runs.finetune_package import _body
from vidgen.training import TrainConfig

LOSSES = [float(v) for v in range(30, 0, -1)]  # 30, 29, ..., 1


def test_first_and_last_loss_are_means_of_ten_steps_or_of_each_half_of_a_shorter_run():
    assert loss_span(LOSSES) == {"first_loss": pytest.approx(25.5), "last_loss": pytest.approx(5.5), "loss_window": 10}
    assert loss_span([5.0, 4.0, 2.0, 0.0]) == {"first_loss": 4.5, "last_loss": 1.0, "loss_window": 2}
    assert loss_span([3.0]) == {"first_loss": 3.0, "last_loss": 3.0, "loss_window": 1}


def test_a_train_card_says_what_the_console_says(micro_config):
    span = loss_span(LOSSES)
    metrics = {"first_loss": span["first_loss"], "final_loss": span["last_loss"], "loss_window": 10,
               "autoencoder_mse": 0.01}
    lineage = Lineage("vidgen train --data ...", 0, {"dataset": "s3://b/clips", "dataset_licences": {"cc0-1.0": 3}})
    _, body = parse_card(trained_model_card(VideoDiT(micro_config), TrainConfig(), lineage, metrics, {}, "made"))
    assert loss_span_text(25.5, 5.5, 10) == "loss 25.5000 -> 5.5000 (means of the first and of the last 10 steps)"
    assert "loss 25.5000 -> 5.5000 (means of the first and of the last 10 steps)" in " ".join(body.split())


def test_a_finetune_summary_and_card_report_the_same_windowed_loss():
    history = [{"step": i + 1, "loss": loss} for i, loss in enumerate(LOSSES)]
    cfg = FinetuneConfig(model="out/tiny-wan", data="out/footage")
    run = {**_run_summary(cfg, "finetune-1", {"step": 30, "history": history, "validation": []}, "digest", 1),
           "workers": 1, "zero_stage": 2, "validation": [{"step": 30, "val_loss": 0.5}]}
    assert (run["first_loss"], run["last_loss"], run["loss_window"]) == (25.5, 5.5, 10)  # not step 1's 30.0
    assert loss_span_text(25.5, 5.5, 10) in " ".join(_body("adapter", "what", run).split())
