import numpy as np
import pytest
import torch

from vidgen.diffusion import FlowConfig, flow_loss, initial_noise, sample
from vidgen.model import VideoDiT
from vidgen.training import Batch, TrainConfig, clips_to_tensor, make_optimizer, synth_batches, train_step


def test_a_few_steps_of_the_shared_train_step_reduce_the_loss(micro_config, encoder):
    torch.manual_seed(0)
    model = VideoDiT(micro_config)
    cfg = TrainConfig(lr=2e-3, warmup_steps=1, batch_size=8)
    optimizer, scheduler = make_optimizer(model, cfg)
    batch = next(synth_batches(micro_config, 8, seed=0))
    text = encoder.encode(batch.captions)
    eval_gen = torch.Generator().manual_seed(123)
    def held_loss():
        with torch.no_grad():
            return float(flow_loss(model, batch.x0, text, cfg.flow, torch.Generator().manual_seed(123)))
    before = held_loss()
    for _ in range(60):
        train_step(model, optimizer, scheduler, batch, text, cfg, None, eval_gen)
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
    from vidgen.diffusion import to_uint8_frames
    assert np.array_equal(to_uint8_frames(x), clips)


def test_flow_config_rejects_unknown_loss():
    with pytest.raises(ValueError):
        FlowConfig(loss="eps")
    assert Batch(torch.zeros(1), ["x"]).captions == ["x"]
