import pytest
import torch
from pydantic import ValidationError

from vidgen.model import PRESETS, ModelConfig, VideoDiT


def _inputs(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, *cfg.latent_shape, generator=g)
    tokens = torch.randn(b, 16, cfg.text_dim, generator=g)
    mask = torch.zeros(b, 16, dtype=torch.bool)
    mask[:, :9] = True
    return x, torch.rand(b, generator=g), tokens, mask, torch.randn(b, cfg.text_dim, generator=g)


def test_forward_keeps_the_latent_shape(micro_config):
    model = VideoDiT(micro_config)
    out = model(*_inputs(micro_config))
    assert micro_config.latent_shape == (4, 8, 8, 8)
    assert out.shape == (2, 4, 8, 8, 8)
    assert torch.isfinite(out).all()


def test_the_prompt_steers_the_output_and_dropping_it_uses_the_null_prompt(micro_config):
    torch.manual_seed(0)
    model = VideoDiT(micro_config)
    x, t, tokens, mask, pooled = _inputs(micro_config)
    drop = torch.tensor([True, False])
    a = model(x, t, tokens, mask, pooled)
    b = model(x, t, tokens, mask, pooled, drop_text=drop)
    assert (a[0] - b[0]).abs().max() > 1e-4  # dropped prompt -> different output
    assert torch.allclose(a[1], b[1], atol=1e-5)  # kept prompt -> same output
    other = model(x, t, tokens.roll(1, dims=0), mask, pooled.roll(1, dims=0))
    assert (other - a).abs().max() > 1e-4


def test_adaln_zero_gates_start_closed(micro_config):
    model = VideoDiT(micro_config)
    for block in model.blocks:
        assert block.ada[-1].weight.abs().sum() == 0 and block.ada[-1].bias.abs().sum() == 0
    trained = {id(p) for p in model.diffusion_parameters()}
    assert trained and not any(id(p) in trained for p in model.autoencoder.parameters())


def test_padding_tokens_are_ignored(micro_config):
    torch.manual_seed(0)
    model = VideoDiT(micro_config)
    with torch.no_grad():
        for block in model.blocks:
            block.ada[-1].bias.normal_(0, 0.5)
    x, t, tokens, mask, pooled = _inputs(micro_config)
    changed = tokens.clone()
    changed[:, 9:] = 100.0  # garbage beyond the mask
    assert torch.allclose(model(x, t, tokens, mask, pooled), model(x, t, changed, mask, pooled), atol=1e-5)


def test_presets_sizes_and_flops():
    assert set(PRESETS) == {"tiny", "small", "base"}
    tiny, small = VideoDiT(PRESETS["tiny"]), VideoDiT(PRESETS["small"])
    assert 3e6 < tiny.num_params() < 10e6
    assert small.num_params() > 3 * tiny.num_params()
    assert small.flops_per_sample() > 10 * tiny.flops_per_sample()
    assert PRESETS["base"].num_tokens == 2048
    assert PRESETS["tiny"].num_tokens == 64
    # 2 FLOPs per MAC: the MLP alone is 2 * 2 * N * D * 4D per block
    mlp_flops = 2 * 2 * 64 * 192 * 768 * 6
    assert mlp_flops < tiny.flops_per_sample() < 3 * mlp_flops


def test_bad_shapes_are_refused_with_the_field_named():
    with pytest.raises(ValidationError, match="height=30 is not divisible by 4"):
        ModelConfig(height=30)
    with pytest.raises(ValidationError, match="heads"):
        ModelConfig(dim=100, heads=6)
    with pytest.raises(ValidationError, match="extra"):
        ModelConfig(widht=32)
