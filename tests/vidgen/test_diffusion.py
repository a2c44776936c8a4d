import numpy as np
import pytest
import torch

from vidgen.diffusion import FlowConfig, clips_to_tensor, flow_loss, initial_noise, sample, to_uint8_frames
from vidgen.model import VideoDiT
from vidgen.training import (
    EMA,
    TrainConfig,
    compute_loss,
    make_optimizer,
    synth_batches,
    train_step,
)


def test_the_shared_train_step_fits_one_batch(micro_config, encoder):
    torch.manual_seed(0)
    model = VideoDiT(micro_config)
    cfg = TrainConfig(lr=2e-3, warmup_steps=1, batch_size=8)
    optimizer, scheduler = make_optimizer(model, cfg)
    batch = next(synth_batches(micro_config, 8, seed=0))
    text = encoder.encode(batch.captions)
    train_gen = torch.Generator().manual_seed(7)

    def held_loss():  # the same noise draws every time, so only the weights change
        with torch.no_grad():
            return float(compute_loss(model, batch, text, cfg.flow, None, torch.Generator().manual_seed(123)))
    before = held_loss()
    for _ in range(60):
        train_step(model, optimizer, scheduler, batch, text, cfg, None, train_gen)
    assert held_loss() < 0.5 * before


def test_sampler_is_seeded_per_clip_not_per_batch(micro_config, encoder):
    torch.manual_seed(0)
    model = VideoDiT(micro_config).eval()
    prompts = ["a red circle moving left", "a blue square moving up", "a green triangle moving down"]
    both = sample(model, encoder.encode(prompts), [1, 2, 3], steps=3, guidance=2.0)
    alone = sample(model, encoder.encode(prompts[1:2]), [2], steps=3, guidance=2.0)
    assert both.frames.shape == (3, 8, 32, 32, 3) and both.frames.dtype == np.uint8
    assert np.abs(both.frames[1].astype(int) - alone.frames[0]).max() <= 1
    assert both.seeds == [1, 2, 3] and both.timings["sample_s"] > 0
    assert not np.array_equal(both.frames[0], both.frames[1])


def test_sampler_rejects_bad_arguments(micro_config, encoder):
    model = VideoDiT(micro_config).eval()
    text = encoder.encode(["a red circle moving left"])
    with pytest.raises(ValueError, match="steps"):
        sample(model, text, [0], steps=0)
    with pytest.raises(ValueError, match="seeds"):
        sample(model, text, [0, 1], steps=2)


def test_noise_and_conversions():
    a = initial_noise([5, 6], (3, 2, 4, 4))
    assert torch.equal(a[0], initial_noise([5], (3, 2, 4, 4))[0])
    clips = np.random.default_rng(0).integers(0, 256, size=(2, 8, 4, 4, 3), dtype=np.uint8)
    x = clips_to_tensor(clips)
    assert x.shape == (2, 3, 8, 4, 4) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8_frames(x), clips)


class _Oracle(torch.nn.Module):
    """Always predicts the same clean latents: the exact sampler must then land on them from any noise."""

    def __init__(self, model, target):
        super().__init__()
        self.config, self.autoencoder, self.target = model.config, model.autoencoder, target

    def forward(self, x, t, tokens, mask, pooled, drop_text=None):
        return self.target.expand(x.shape[0], *self.target.shape[1:])


@pytest.mark.parametrize("steps, guidance", [(1, 1.0), (5, 3.0), (24, 7.5)])
def test_sampler_integrates_to_the_predicted_clean_latents(micro_config, encoder, steps, guidance):
    torch.manual_seed(0)
    model = VideoDiT(micro_config).eval()
    target = torch.randn(1, *micro_config.latent_shape)
    oracle = _Oracle(model, target)
    out = sample(oracle, encoder.encode(["a red circle moving left"] * 2), [3, 4], steps, guidance)
    with torch.no_grad():
        expected = to_uint8_frames(model.autoencoder.decode(target))[0]
    for clip in out.frames:
        assert np.abs(clip.astype(int) - expected).max() <= 1


def test_velocity_loss_weights_low_noise_more_than_x0_loss(micro_config, encoder):
    torch.manual_seed(0)
    model = VideoDiT(micro_config)
    x0 = torch.randn(4, *micro_config.latent_shape)
    text = encoder.encode(["a red circle moving left"] * 4)
    losses = {}
    for loss in ("x0", "velocity"):
        cfg = FlowConfig(loss=loss, t_mean=-3.0, t_std=0.1, text_dropout=0)  # t near 0.05: almost clean
        with torch.no_grad():
            losses[loss] = float(flow_loss(model, x0, text, cfg, torch.Generator().manual_seed(0)))
    assert losses["velocity"] > 50 * losses["x0"]  # 1 / t^2 with t ~ 0.05 is ~400
    with pytest.raises(ValueError):
        FlowConfig(loss="eps")


def test_ema_follows_the_weights_with_its_decay(micro_config):
    model = VideoDiT(micro_config)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    before = next(ema.model.parameters()).clone()
    ema.update(model, step=1000)  # past warm-up: decay 0.9
    after = next(ema.model.parameters())
    assert torch.allclose(after, before + 0.1, atol=1e-6)
