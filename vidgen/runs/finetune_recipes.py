"""What differs between diffusers video-model families when they are fine-tuned: one small `Recipe` per pipeline
class, all in one table (`RECIPES`), each read from that pipeline's own `__call__` and encode code (diffusers 0.42.1).

A recipe says how clips become the normalised latents the transformer denoises (the inverse of what the pipeline does
to its latents before `vae.decode`), how captions become the text embeddings the transformer takes (the pipeline's own
`encode_prompt`, at the text length it renders with), and how the transformer is called on a noisy latent batch. The
shapes a model can make come from `capabilities_of`, the one rule rendering uses too (Wan/LTX/CogVideoX: 4k+1 frames).

Nothing here knows Ray, DeepSpeed or storage. The fine-tuning job runs `encode_clips` and `encode_text` once where
the VAE and text encoder live (the precompute stage); its training workers hold only the transformer and an
`Objective` (`vidgen.runs.finetune_objective`), which carries the recipe and the few VAE numbers `predict` needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch

from vidgen.clip_request import Dimension
from vidgen.pipelines.diffusers_folder import capabilities_of, text_limit


@dataclass(frozen=True)
class Latents:
    """Normalised clip latents in the layout the family's transformer takes, with the latent grid they came from."""

    values: torch.Tensor  # Wan (B, C, F, H, W); LTX packed tokens (B, F*H*W, C); CogVideoX (B, F, C, H, W)
    grid: tuple[int, int, int]  # latent (frames, height, width): LTX unpacks its tokens and CogVideoX sizes its RoPE


@dataclass(frozen=True)
class TextEmbeddings:
    """What the pipeline's `encode_prompt` gives its transformer for a batch of captions."""

    embeds: torch.Tensor  # (B, L, D)
    mask: torch.Tensor | None = None  # (B, L), only where the transformer takes one (LTX)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbeddings:
        mask = None if self.mask is None else self.mask.to(device)
        return TextEmbeddings(self.embeds.to(device=device, dtype=dtype), mask)


@dataclass(frozen=True)
class LatentGeometry:
    """The VAE's compression and the pipeline's default frame rate: all `predict` needs besides the transformer,
    read once from the pipeline so training workers never load the VAE."""

    temporal: int  # pixel frames per latent frame
    spatial: int  # pixels per latent cell along height and width
    frame_rate: float | None  # the `frame_rate` default of the pipeline's `__call__` (LTX's RoPE scale), else None


@dataclass(frozen=True)
class ShapeRule:
    """The clip shapes a model can make (`capabilities_of`): clips outside it are refused, or fitted by cropping
    frames and resizing to the largest admitted shape not above theirs (`fitted`)."""

    frames: Dimension
    height: Dimension
    width: Dimension

    def check(self, frames: int, height: int, width: int) -> None:
        for name, rule, n in (("frames", self.frames, frames), ("height", self.height, height),
                              ("width", self.width, width)):
            if not rule.admits(n):
                raise ValueError(f"clip {name} {n} is not one this model makes ({rule.describe()}): fit the clips "
                                 f"to {self.fitted(frames, height, width)} (frames, height, width) first")

    def fitted(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return _at_most(self.frames, frames), _at_most(self.height, height), _at_most(self.width, width)


def _at_most(rule: Dimension, n: int) -> int:
    """The largest size `rule` admits that is not above n (its smallest when n is below it)."""
    lowest = rule.min + (rule.remainder - rule.min) % rule.multiple
    return max(lowest, min(n, rule.max) - (min(n, rule.max) - lowest) % rule.multiple)


@dataclass(frozen=True)
class Recipe:
    """What fine-tuning one pipeline family takes; see the module docstring. Functions are module-level, so a
    recipe pickles (it travels to training workers inside an `Objective`)."""

    family: str
    normalise: Callable[[Any, torch.Tensor], torch.Tensor]  # (pipe, VAE posterior mean (B, C, F, H, W)) -> values
    encode_prompt: Callable[[Any, list[str], int], TextEmbeddings]  # (pipe, captions, max tokens)
    predict: Callable[..., torch.Tensor]  # (transformer, noisy, timesteps, text, grid, geometry) -> model output
    attention_targets: tuple[str, ...]  # module-name suffixes of the attention projections (LoRA's default)
    feed_forward_targets: tuple[str, ...]  # module-name suffixes of the feed-forward projections
    dynamic_shift: bool = False  # the pipeline derives the flow shift `mu` from the latent grid (LTX)


# --- Wan: AutoencoderKLWan latents standardised by the VAE's per-channel latents_mean/std; UMT5 text ---


def _wan_normalise(pipe, z: torch.Tensor) -> torch.Tensor:
    # the inverse of WanPipeline.__call__'s `latents / (1 / std) + mean` before vae.decode
    shape = (1, pipe.vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(pipe.vae.config.latents_mean).view(shape).to(z)
    std = torch.tensor(pipe.vae.config.latents_std).view(shape).to(z)
    return (z - mean) / std  # (B, C, F, H, W)


def _wan_encode_prompt(pipe, captions: list[str], max_tokens: int) -> TextEmbeddings:
    embeds, _ = pipe.encode_prompt(captions, do_classifier_free_guidance=False, max_sequence_length=max_tokens,
                                   device=pipe.device)
    return TextEmbeddings(embeds)


def _wan_predict(transformer, noisy, timesteps, text: TextEmbeddings, grid, geometry) -> torch.Tensor:
    return transformer(hidden_states=noisy, timestep=timesteps, encoder_hidden_states=text.embeds,
                       return_dict=False)[0]


# --- LTX-Video: latents normalised by the VAE's buffers and scaling factor, packed into tokens; T5 text + mask ---


def _ltx_normalise(pipe, z: torch.Tensor) -> torch.Tensor:
    # the inverse of LTXPipeline.__call__'s _unpack_latents + _denormalize_latents before vae.decode
    z = pipe._normalize_latents(z, pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor)
    return pipe._pack_latents(z, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)  # (B, N, D)


def _ltx_encode_prompt(pipe, captions: list[str], max_tokens: int) -> TextEmbeddings:
    embeds, mask, _, _ = pipe.encode_prompt(captions, do_classifier_free_guidance=False,
                                            max_sequence_length=max_tokens, device=pipe.device)
    return TextEmbeddings(embeds, mask)


def _ltx_predict(transformer, noisy, timesteps, text: TextEmbeddings, grid, geometry) -> torch.Tensor:
    frames, height, width = grid
    rope_scale = (geometry.temporal / geometry.frame_rate, geometry.spatial, geometry.spatial)
    return transformer(hidden_states=noisy, encoder_hidden_states=text.embeds, timestep=timesteps,
                       encoder_attention_mask=text.mask, num_frames=frames, height=height, width=width,
                       rope_interpolation_scale=rope_scale, return_dict=False)[0]


# --- CogVideoX: latents times the VAE's scaling_factor, frames before channels; T5 text at the fixed length ---


def _cogvideox_normalise(pipe, z: torch.Tensor) -> torch.Tensor:
    # the inverse of CogVideoXPipeline.decode_latents (permute to channels first, divide by scaling_factor)
    return (z * pipe.vae_scaling_factor_image).permute(0, 2, 1, 3, 4)  # (B, C, F, H, W) -> (B, F, C, H, W)


def _cogvideox_encode_prompt(pipe, captions: list[str], max_tokens: int) -> TextEmbeddings:
    embeds, _ = pipe.encode_prompt(captions, do_classifier_free_guidance=False, max_sequence_length=max_tokens,
                                   device=pipe.device)
    return TextEmbeddings(embeds)


def _cogvideox_rotary(transformer, grid, geometry, device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The pipeline's own 3D RoPE for this grid (CogVideoX 1.0 5B and 1.5 use it; 2B does not)."""
    if not transformer.config.use_rotary_positional_embeddings:
        return None
    from diffusers import CogVideoXPipeline

    frames, height, width = grid
    # the pipeline method reads only these two attributes of the pipeline
    owner = SimpleNamespace(vae_scale_factor_spatial=geometry.spatial, transformer=transformer)
    return CogVideoXPipeline._prepare_rotary_positional_embeddings(
        owner, height * geometry.spatial, width * geometry.spatial, frames, device)


def _cogvideox_predict(transformer, noisy, timesteps, text: TextEmbeddings, grid, geometry) -> torch.Tensor:
    return transformer(hidden_states=noisy, encoder_hidden_states=text.embeds, timestep=timesteps,
                       image_rotary_emb=_cogvideox_rotary(transformer, grid, geometry, noisy.device),
                       return_dict=False)[0]


_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
RECIPES: dict[str, Recipe] = {
    "WanPipeline": Recipe("Wan", _wan_normalise, _wan_encode_prompt, _wan_predict, _ATTENTION,
                          ("ffn.net.0.proj", "ffn.net.2")),
    "LTXPipeline": Recipe("LTX-Video", _ltx_normalise, _ltx_encode_prompt, _ltx_predict, _ATTENTION,
                          ("ff.net.0.proj", "ff.net.2"), dynamic_shift=True),
    "CogVideoXPipeline": Recipe("CogVideoX", _cogvideox_normalise, _cogvideox_encode_prompt, _cogvideox_predict,
                                _ATTENTION, ("ff.net.0.proj", "ff.net.2")),
}


def recipe_for(pipeline_class: str) -> Recipe:
    """The recipe of a diffusers pipeline class name; a class without one is refused naming those that have one."""
    recipe = RECIPES.get(pipeline_class)
    if recipe is None:
        raise ValueError(f"{pipeline_class} has no fine-tuning recipe: vidgen fine-tunes {', '.join(RECIPES)}")
    return recipe


def shape_rule(pipe) -> ShapeRule:
    """The clip shapes the pipeline makes (the rule rendering resolves clips with)."""
    capabilities = capabilities_of(pipe)
    return ShapeRule(capabilities.frames, capabilities.height, capabilities.width)


def latent_geometry(pipe) -> LatentGeometry:
    """The VAE compression and default frame rate of a pipeline (a loaded one or a meta-weight `skeleton`)."""
    temporal = getattr(pipe, "vae_scale_factor_temporal", None) or pipe.vae_temporal_compression_ratio
    spatial = getattr(pipe, "vae_scale_factor_spatial", None) or pipe.vae_spatial_compression_ratio
    frame_rate = inspect.signature(type(pipe).__call__).parameters.get("frame_rate")
    return LatentGeometry(int(temporal), int(spatial), None if frame_rate is None else frame_rate.default)


@torch.no_grad()
def encode_clips(pipe, frames: torch.Tensor) -> Latents:
    """uint8 clips (B, T, H, W, 3) -> normalised latents, encoded by the pipeline's VAE.

    The posterior mean is taken, not a sample, so a latent is a pure function of its clip: a precomputed cache keyed
    by (model digest, data set digest, shape, recipe) then names its contents exactly."""
    recipe = recipe_for(type(pipe).__name__)
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"clips must be uint8 (B, T, H, W, 3), not {frames.dtype} {tuple(frames.shape)}")
    shape_rule(pipe).check(*frames.shape[1:4])
    vae = pipe.vae
    pixels = frames.to(vae.device).permute(0, 4, 1, 2, 3).to(vae.dtype) / 127.5 - 1.0  # (B, 3, T, H, W) in [-1, 1]
    z = vae.encode(pixels).latent_dist.mode()  # (B, C, F, H, W)
    return Latents(recipe.normalise(pipe, z.float()), tuple(z.shape[2:]))


@torch.no_grad()
def encode_text(pipe, captions: list[str]) -> TextEmbeddings:
    """Captions -> the pipeline's own text embeddings, at the text length it renders with (`text_limit`)."""
    recipe = recipe_for(type(pipe).__name__)
    return recipe.encode_prompt(pipe, list(captions), text_limit(pipe))
