"""Training on data sets made by others: a caption the text encoder refuses drops its sample, not the run."""

import torch

from vidgen.training import Batch, encode_batch


def test_samples_with_captions_the_encoder_refuses_are_dropped(encoder, caplog):
    x0 = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1, 1).expand(3, 3, 8, 32, 32)
    long = " ".join(["a very long caption"] * 12)
    kept, text = encode_batch(Batch(x0, ["a red square moving up", long, "a blue circle moving left"]), encoder)
    assert kept.captions == ["a red square moving up", "a blue circle moving left"]
    assert [float(c[0, 0, 0, 0]) for c in kept.x0] == [0.0, 2.0] and text.pooled.shape == (2, 384)
    assert "skipped a training sample" in caplog.text and "tokens long" in caplog.text
    empty, none = encode_batch(Batch(x0[:1], [long]), encoder)
    assert none is None and empty.captions == [] and len(empty.x0) == 0


def test_the_run_layer_supplies_evaluation_during_training(encoder):
    from vidgen.training import TrainConfig, train_local

    cfg = TrainConfig(model={"dim": 48, "depth": 2, "heads": 2, "ae_channels": 8}, max_steps=3, batch_size=2,
                      warmup_steps=1, autoencoder_steps=1, eval_every_minutes=1e-6, precision="float32")
    seen = []

    def evaluate(model):
        seen.append(model)
        return {"seen": {"all_three": 0.25}, "heldout": {"all_three": 0.5}}

    result = train_local(cfg, encoder, evaluate=evaluate)
    assert [e["step"] for e in result.evals] == [1, 2, 3] and result.evals[0]["heldout"] == {"all_three": 0.5}
    assert all(m is result.model for m in seen)  # the EMA, the model clips are sampled from
    assert train_local(cfg, encoder).evals == []  # no evaluation without one
