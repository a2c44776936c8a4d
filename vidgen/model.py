"""Latent video diffusion transformer: 3D patches, joint space-time attention, adaLN-Zero, text cross-attention.

The transformer denoises latents of a per-frame autoencoder (`vidgen.autoencoder`, trained first and then
frozen inside the model) and predicts clean latents x0 (see `vidgen.diffusion`). Text enters twice: the
pooled sentence vector joins the timestep in adaLN (global: colour, shape), and every block cross-attends to
the per-token embeddings (the motion word's own token carries direction far better than the pooled vector).
In `tiny`, tokens span all frames of a patch column ("tubes"), so a token sees its whole trajectory at once.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from vidgen.autoencoder import DOWNSAMPLE, FrameAutoencoder

if TYPE_CHECKING:
    from vidgen.step_cache import FirstBlockCache


class ModelConfig(BaseModel):
    """Shape of the clips a model makes and of the network that makes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frames: int = Field(8, gt=0, description="frames per clip")
    height: int = Field(32, gt=0, description="clip height in pixels")
    width: int = Field(32, gt=0, description="clip width in pixels")
    patch: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (8, 1, 1), description="patch size (t, h, w) in latent cells; t = frames makes tube tokens")
    dim: int = Field(192, gt=0, description="transformer width, divisible by heads")
    depth: int = Field(6, gt=0, description="transformer blocks")
    heads: int = Field(6, gt=0, description="attention heads")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / dim")
    text_dim: int = Field(384, ge=384, le=384, description="width of the text encoder's embeddings (MiniLM: 384)")
    latent_channels: int = Field(4, gt=0, description="autoencoder latent channels per 4x4 pixel cell")
    ae_channels: int = Field(32, gt=0, description="autoencoder width")

    @model_validator(mode="after")
    def _check_divisible(self) -> ModelConfig:
        pt, ph, pw = self.patch
        for name, size, p in (("frames", self.frames, pt), ("height", self.height, ph * DOWNSAMPLE),
                              ("width", self.width, pw * DOWNSAMPLE)):
            if size % p:
                raise ValueError(f"{name}={size} is not divisible by {p} (patch size x autoencoder downsampling); "
                                 f"pick a multiple of {p}")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} is not divisible by heads={self.heads}")
        return self

    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        """(C, T, h, w) of one clip's latents."""
        return (self.latent_channels, self.frames, self.height // DOWNSAMPLE, self.width // DOWNSAMPLE)

    @property
    def grid(self) -> tuple[int, int, int]:
        _, t, h, w = self.latent_shape
        return (t // self.patch[0], h // self.patch[1], w // self.patch[2])

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)


PRESETS: dict[str, ModelConfig] = {
    # 8x32x32 clips -> 4x8x8x8 latents -> 64 tube tokens (each spans all 8 frames); ~5M params; 2 CPU cores
    "tiny": ModelConfig(),
    # 16x64x64 clips -> 16x16x16 latents, 4x2x2 patches -> 256 tokens; one GPU
    "small": ModelConfig(frames=16, height=64, width=64, patch=(4, 2, 2), dim=384, depth=8, heads=6),
    # GPU-sized: 16x128x128 clips -> 16x32x32 latents, 2x2x2 patches -> 2048 tokens, ~150M params
    "base": ModelConfig(frames=16, height=128, width=128, patch=(2, 2, 2), dim=768, depth=12, heads=12,
                        ae_channels=64),
}


# --- embeddings ---


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1]: (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Noise level t -> conditioning vector."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


# --- transformer block ---


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None, else cross-attention to it."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """x (B, N, D), context (B, L, Dc), mask (B, L) True where attendable -> (B, N, D)."""
        context = x if context is None else context
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)  # (B, H, N, Dh)
        k, v = rearrange(self.kv(context), "b l (two h d) -> two b h l d", two=2, h=self.heads)  # (B, H, L, Dh)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, L)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(rearrange(out, "b h n d -> b n (h d)"))  # (B, N, D)


class DiTBlock(nn.Module):
    """Joint space-time self-attention and MLP under adaLN-Zero, with text cross-attention between them."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, text_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.cross = Attention(dim, heads, context_dim=text_dim)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x, c, text, text_mask):
        """x (B, N, D), c (B, D), text (B, L, Dt), text_mask (B, L) -> (B, N, D)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c).chunk(6, dim=-1)  # each (B, D)
        x = x + gate1[:, None] * self.attn(modulate(self.norm1(x), shift1, scale1))
        x = x + self.cross(self.norm2(x), text, text_mask)
        return x + gate2[:, None] * self.mlp(modulate(self.norm3(x), shift2, scale2))


# --- the model ---


class VideoDiT(nn.Module):
    """Text-conditioned latent video diffusion transformer predicting clean latents, with its frozen autoencoder."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        d, c = config.dim, config.latent_channels
        self.autoencoder = FrameAutoencoder(c, config.ae_channels)
        self.patch_embed = nn.Conv3d(c, d, kernel_size=config.patch, stride=config.patch)
        self.pos_embed = nn.Parameter(torch.randn(1, config.num_tokens, d) * 0.02)
        self.t_embed = TimestepEmbedder(d)
        self.pooled_embed = nn.Sequential(nn.Linear(config.text_dim, d), nn.SiLU(), nn.Linear(d, d))
        # learned "no prompt" inputs for classifier-free guidance
        self.null_tokens = nn.Parameter(torch.randn(1, 1, config.text_dim) * 0.02)
        self.null_pooled = nn.Parameter(torch.zeros(1, config.text_dim))
        self.blocks = nn.ModuleList(DiTBlock(d, config.heads, config.mlp_ratio, config.text_dim)
                                    for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.final = nn.Linear(d, c * math.prod(config.patch))
        self._init_weights()

    def _init_weights(self) -> None:
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.startswith("autoencoder"):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # adaLN-Zero: every residual branch starts as the identity
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        nn.init.zeros_(self.final_ada[-1].weight)
        nn.init.zeros_(self.final_ada[-1].bias)

    def diffusion_parameters(self) -> list[nn.Parameter]:
        """The parameters the diffusion loss trains (everything but the autoencoder)."""
        return [p for name, p in self.named_parameters() if not name.startswith("autoencoder.")]

    def forward(self, x, t, text_tokens, text_mask, pooled, drop_text=None, cache: FirstBlockCache | None = None):
        """Predict clean latents x0.

        x (B, C, T, h, w) noisy latents; t (B,) noise level in [0, 1]; text_tokens (B, L, 384); text_mask (B, L)
        True on real tokens; pooled (B, 384); drop_text (B,) True to replace the prompt with the learned null
        prompt (classifier-free guidance); cache: a sampling trajectory's first-block cache, which may skip the
        blocks after the first (`vidgen.step_cache`). Returns (B, C, T, h, w).
        """
        if drop_text is not None:  # not `.any()`: every rank must use (and all-reduce) the null embeddings each step
            keep = ~drop_text
            null_tokens = torch.zeros_like(text_tokens)
            null_tokens[:, :1] = self.null_tokens
            null_mask = torch.zeros_like(text_mask)
            null_mask[:, 0] = True
            text_tokens = torch.where(keep[:, None, None], text_tokens, null_tokens)
            text_mask = torch.where(keep[:, None], text_mask, null_mask)
            pooled = torch.where(keep[:, None], pooled, self.null_pooled.expand_as(pooled))

        gt, gh, gw = self.config.grid
        tokens = rearrange(self.patch_embed(x), "b d t h w -> b (t h w) d") + self.pos_embed  # (B, N, D)
        c = self.t_embed(t) + self.pooled_embed(pooled)  # (B, D)
        if cache is not None:
            tokens = cache.run(self.blocks, tokens, c, text_tokens, text_mask)
        else:
            for block in self.blocks:
                tokens = block(tokens, c, text_tokens, text_mask)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        patches = self.final(modulate(self.final_norm(tokens), shift, scale))  # (B, N, C*pt*ph*pw)
        pt, ph, pw = self.config.patch
        return rearrange(patches, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)",
                         t=gt, h=gh, w=gw, pt=pt, ph=ph, pw=pw)  # (B, C, T, h, w)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def flops_per_sample(self, text_tokens: int = 16) -> int:
        """Transformer forward FLOPs for one clip (2 per multiply-add, matmuls only); training is ~3x this.

        The frozen autoencoder is left out: it costs under 2% of the transformer per clip."""
        cfg, n, d, n_text = self.config, self.config.num_tokens, self.config.dim, text_tokens
        hidden = int(d * cfg.mlp_ratio)
        per_block = (
            n * (d * 3 * d + d * d)  # self-attention q, kv, out
            + 2 * n * n * d  # attention scores and weighted sum
            + n * 2 * d * d + n_text * cfg.text_dim * 2 * d  # cross-attention q, out; kv over text tokens
            + 2 * n * n_text * d
            + n * 2 * d * hidden  # MLP
            + d * 6 * d  # adaLN
        )
        macs = cfg.depth * per_block + n * cfg.latent_channels * math.prod(cfg.patch) * d * 2  # patch in and out
        return 2 * macs
