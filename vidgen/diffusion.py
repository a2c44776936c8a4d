"""Rectified flow: the training loss and an Euler sampler with classifier-free guidance.

Everything here works on the model's latents. Convention: x_t = (1 - t) x0 + t eps, t in [0, 1]; t = 1 is pure
noise. The network predicts x0 (in pixel space a 384-value tube patch could not be predicted as velocity by a
192-wide model: noise does not compress). The default loss is plain MSE on x0, with noise levels drawn
leaning noisy: the frozen decoder draws the crisp edges, so what diffusion must learn is the layout, which is
decided at high noise. The alternative, MSE on the implied velocity v = (x_t - x0_hat) / t, weights low noise
levels by 1/t^2; on `tiny` it left direction at chance after 1000 steps where the x0 loss reached 60%.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from vidgen.clip_request import Guidance, Steps
from vidgen.precision import autocast
from vidgen.step_cache import FirstBlockCache
from vidgen.text import TextEmbedding

MIN_T = 0.05  # clamp for 1/t in the v-loss, so near-clean samples do not dominate it


class FlowConfig(BaseModel):
    """How noise levels are drawn in training and how prompts are dropped for guidance."""

    model_config = ConfigDict(extra="forbid")

    t_mean: float = Field(0.5, description="mean of the logit-normal noise-level distribution (> 0 leans noisy)")
    t_std: float = Field(1.0, gt=0, description="std of the logit-normal noise-level distribution")
    text_dropout: float = Field(0.1, ge=0, lt=1, description="fraction of prompts replaced by the null prompt")
    loss: str = Field("x0", pattern="^(velocity|x0)$", description="loss on x0, or on the implied velocity")


class SamplerConfig(BaseModel):
    """How clips are sampled for evaluation and generation (saved with a model as its defaults)."""

    model_config = ConfigDict(extra="forbid")

    steps: Steps = 24
    guidance: Guidance = 3.0


def flow_loss(model, x0: torch.Tensor, text: TextEmbedding, cfg: FlowConfig, generator: torch.Generator | None = None):
    """Rectified-flow loss for clean latents x0 (B, C, T, h, w); returns a scalar tensor."""
    b, device = x0.shape[0], x0.device
    where = generator.device if generator is not None else device  # draw where the generator lives, then move
    t = torch.sigmoid(cfg.t_mean + cfg.t_std * torch.randn(b, generator=generator, device=where)).to(device)
    eps = torch.randn(x0.shape, generator=generator, device=where).to(device, x0.dtype)
    tb = t[:, None, None, None, None]
    xt = (1 - tb) * x0 + tb * eps
    drop = (torch.rand(b, generator=generator, device=where) < cfg.text_dropout).to(device)
    x0_hat = model(xt, t, text.tokens, text.mask, text.pooled, drop_text=drop).float()
    err = (x0_hat - x0) ** 2
    if cfg.loss == "velocity":
        err = err / tb.clamp(min=MIN_T) ** 2
    return err.mean()


@dataclass
class GenerationOutput:
    """Generated clips as uint8 (B, T, H, W, 3), the seed of each, and where the time went; with `keep_steps`, also
    the trajectory: `states` {step: latents (B, C, T, h, w) before that step, at t = 1 - step / steps} and the final
    latents `x0` (what distillation regresses onto). With step caching, `cached_steps` per clip: {"full": steps whose
    transformer ran every block, "skipped": steps that reused the cache} (a diffusers pipeline that runs its
    guidance passes apart counts each pass as a share of its step, so halves can occur)."""

    frames: np.ndarray
    seeds: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    states: dict[int, torch.Tensor] = field(default_factory=dict)
    x0: torch.Tensor | None = None
    cached_steps: list[dict[str, float]] | None = None


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One noise tensor per seed, independent of batch composition: (B, *shape)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def clips_to_tensor(clips) -> torch.Tensor:
    """uint8 (B, T, H, W, 3) -> float (B, 3, T, H, W) in [-1, 1]: what the model and the feature nets take."""
    x = torch.as_tensor(np.asarray(clips))
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"clips must be (B, T, H, W, 3), got {tuple(x.shape)}")
    return (x.float() / 127.5 - 1).permute(0, 4, 1, 2, 3)


def to_uint8_frames(x: torch.Tensor) -> np.ndarray:
    """(B, 3, T, H, W) in [-1, 1] -> uint8 (B, T, H, W, 3)."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 4, 1).cpu().numpy()


@torch.inference_mode()
def sample(model, text: TextEmbedding, seeds: list[int], steps: int = 24, guidance: float = 3.0,
           autocast_dtype: torch.dtype | None = None, progress=None, keep_steps: tuple[int, ...] = (),
           cache_threshold: float | None = None) -> GenerationOutput:
    """Euler integration from noise (t=1) to latents (t=0) with classifier-free guidance, then decoding.

    `steps` is the number of model evaluations per clip (each one batches the prompted and null-prompt
    passes); `guidance` 1.0 turns guidance off (one pass a step). `progress(step)` is called after each step if
    given. `keep_steps`: the steps whose input states to return, with the final latents (a teacher trajectory).
    `cache_threshold`: first-block caching (`vidgen.step_cache`) at that threshold; None runs every block each step.
    """
    if any(not 0 <= k < steps for k in keep_steps):
        raise ValueError(f"keep_steps must lie in [0, {steps}), got {sorted(keep_steps)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if len(seeds) != text.pooled.shape[0]:
        raise ValueError(f"got {len(seeds)} seeds for {text.pooled.shape[0]} prompts")
    cfg = model.config
    device = next(model.parameters()).device
    started = time.perf_counter()
    x = initial_noise(seeds, cfg.latent_shape).to(device)
    b = x.shape[0]
    guided = guidance != 1.0
    tokens, mask, pooled = text.tokens.to(device), text.mask.to(device), text.pooled.to(device)
    drop = torch.zeros(b, dtype=torch.bool, device=device)
    if guided:
        tokens, mask, pooled = tokens.repeat(2, 1, 1), mask.repeat(2, 1), pooled.repeat(2, 1)
        drop = torch.cat([drop, torch.ones_like(drop)])
    ts = torch.linspace(1.0, 0.0, steps + 1)
    cache = FirstBlockCache(cache_threshold) if cache_threshold is not None else None
    cached = {} if cache is None else {"cache": cache}  # models without a cache argument sample uncached as before
    states = {}
    for i in range(steps):
        t, t_next = float(ts[i]), float(ts[i + 1])
        if i in keep_steps:
            states[i] = x.clone()
        x_in = torch.cat([x, x]) if guided else x
        with autocast(autocast_dtype, device.type):
            x0_hat = model(x_in, torch.full((x_in.shape[0],), t, device=device), tokens, mask, pooled,
                           drop_text=drop, **cached).float()
        if guided:
            cond, uncond = x0_hat.chunk(2)
            x0_hat = uncond + guidance * (cond - uncond)
        velocity = (x - x0_hat) / t  # exact for straight paths; t >= 1/steps here
        x = x + (t_next - t) * velocity if t_next > 0 else x0_hat
        if progress is not None:
            progress(i + 1)
    with autocast(autocast_dtype, device.type):
        frames = to_uint8_frames(model.autoencoder.decode(x))  # in bf16 ~1.5x faster: a few-step clip's fixed cost
    counts = None if cache is None else [{"full": cache.full, "skipped": cache.skipped} for _ in range(b)]
    return GenerationOutput(frames, list(seeds), {"sample_s": time.perf_counter() - started}, states,
                            x if keep_steps else None, counts)
