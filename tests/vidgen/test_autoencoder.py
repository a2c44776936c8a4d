import torch

from vidgen.autoencoder import FrameAutoencoder
from vidgen.model import ModelConfig
from vidgen.training import synth_batches


def test_shapes_round_trip():
    ae = FrameAutoencoder(latent_channels=4, channels=8)
    x = torch.rand(2, 3, 8, 32, 32) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 8, 8) and z.abs().max() <= 1  # tanh-bounded before scaling (scale is 1)
    assert ae.decode(z).shape == x.shape


def test_a_short_fit_reconstructs_and_calibration_gives_unit_latents():
    torch.manual_seed(0)
    ae = FrameAutoencoder(latent_channels=4, channels=16)
    batches = synth_batches(ModelConfig(), 8, seed=0)
    held = next(batches).x0
    optimizer = torch.optim.AdamW(ae.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(ae.reconstruction_loss(held, latent_noise=0))
    for _ in range(150):
        loss = ae.reconstruction_loss(next(batches).x0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(ae.reconstruction_loss(held, latent_noise=0))
    assert after < 0.5 * before
    ae.calibrate(torch.cat([next(batches).x0 for _ in range(4)]))
    with torch.no_grad():  # other clips of the world now encode to unit-variance latents
        assert abs(float(ae.encode(held).std()) - 1.0) < 0.15
