"""Frame autoencoder: each 32x32 RGB frame <-> a 4x8x8 latent, so the diffusion transformer works on latents.

Why: in pixel space a small DiT learns colour and motion quickly but draws shapes with ragged, fragmented
outlines for a long time (its per-patch linear output must paint every edge). A convolutional decoder learns to
draw crisp shapes from reconstruction alone in a couple of minutes; diffusion then only has to place a
12x smaller latent. Latents are normalised to unit variance with a scale measured after training, and the
decoder is trained on noisy latents (bounded by tanh, so the noise cannot be outgrown) so that it forgives
small errors of the sampler.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

DOWNSAMPLE = 4  # pixels per latent cell along each spatial axis


class FrameAutoencoder(nn.Module):
    """Per-frame convolutional autoencoder with a 4x spatial downsampling."""

    def __init__(self, latent_channels: int = 4, channels: int = 32):
        super().__init__()
        c = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, c, 4, stride=2, padding=1), nn.SiLU(),  # H/2
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),  # H/4
            nn.Conv2d(2 * c, latent_channels, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, 2 * c, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU(),  # H/2
            nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.SiLU(),  # H
            nn.Conv2d(c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 3, 3, padding=1),
        )
        self.register_buffer("scale", torch.ones(()))  # latent std, set by `calibrate`

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, C, T, H/4, W/4)."""
        b = x.shape[0]
        z = torch.tanh(self.encoder(rearrange(x, "b c t h w -> (b t) c h w")))  # (B*T, C, H/4, W/4), bounded
        return rearrange(z, "(b t) c h w -> b c t h w", b=b) / self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, T, h, w) -> clips (B, 3, T, 4h, 4w) in about [-1, 1]."""
        b = z.shape[0]
        x = self.decoder(rearrange(z * self.scale, "b c t h w -> (b t) c h w"))  # (B*T, 3, H, W)
        return rearrange(x, "(b t) c h w -> b c t h w", b=b)

    def reconstruction_loss(self, x: torch.Tensor, latent_noise: float = 0.1) -> torch.Tensor:
        """MSE of decode(encode(x) + noise) against x, for clips (B, 3, T, H, W)."""
        z = self.encode(x)
        z = z + latent_noise * torch.randn_like(z)
        return F.mse_loss(self.decode(z), x)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> float:
        """Set `scale` so latents of clips like `x` have unit standard deviation; returns the scale."""
        self.scale.fill_(1.0)
        self.scale.fill_(float(self.encode(x).std()))
        return float(self.scale)
