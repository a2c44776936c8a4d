"""The fine-tuning objective of a diffusers video pipeline, following the pipeline's own scheduler.

- `FlowMatchEulerDiscreteScheduler` (Wan, LTX-Video): flow matching. A noise level sigma in (0, 1) is drawn
  uniformly and moved by the scheduler's own shift (its static `shift`, or with `use_dynamic_shifting` its
  `time_shift` at the `mu` the pipeline computes from the latent grid), x_t = (1 - sigma) x0 + sigma noise, the
  transformer sees timestep sigma * num_train_timesteps (as in the pipeline's loop) and learns the velocity
  noise - x0 (what `scheduler.step` integrates).
- `UniPCMultistepScheduler` / `DPMSolverMultistepScheduler` with `use_flow_sigmas` and `prediction_type:
  flow_prediction` (what Wan2.1's own diffusers folders ship): the same flow matching, shifted by `flow_shift`; the
  solver only changes how sampling integrates the velocity.
- The DDPM family (`DDPMScheduler`, `DDIMScheduler`, `CogVideoXDDIMScheduler`, `CogVideoXDPMScheduler`, CogVideoX's):
  an integer timestep drawn uniformly, x_t from the scheduler's own `add_noise` (so its betas, zero-SNR rescale and
  CogVideoX's SNR shift hold), and the target its `prediction_type` names: the noise (`epsilon`) or the scheduler's
  `get_velocity` (`v_prediction`).
Any other scheduler, or prediction type, is refused by name. `validation_loss` is the same loss at fixed noise levels
and seeded noise, so its numbers are comparable across steps and runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vidgen.runs.finetune_recipes import LatentGeometry, Latents, Recipe, TextEmbeddings, latent_geometry, recipe_for

FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)
FLOW_SOLVERS = ("UniPCMultistepScheduler", "DPMSolverMultistepScheduler")  # flow matching when set up for it
DDPM_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "CogVideoXDDIMScheduler", "CogVideoXDPMScheduler")
DDPM_PREDICTIONS = ("epsilon", "v_prediction")
# noise levels (fractions of the scheduler's range, before its shift) the validation loss averages over
VALIDATION_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class Objective:
    """What a training worker needs besides the transformer: the family's recipe, the pipeline's scheduler (configs
    only, no weights) and the VAE's geometry. Built once from a pipeline (`objective_of`), and it pickles."""

    pipeline_class: str
    recipe: Recipe
    scheduler: Any
    target: str  # "flow", "epsilon" or "v_prediction"
    geometry: LatentGeometry


def training_target(scheduler) -> str:
    """The objective a scheduler's config implies; an unknown scheduler or prediction type is refused by name."""
    name = type(scheduler).__name__
    if name in FLOW_SCHEDULERS:
        return "flow"
    if name in FLOW_SOLVERS:
        if scheduler.config.get("use_flow_sigmas") and scheduler.config.prediction_type == "flow_prediction":
            return "flow"
        raise ValueError(f"scheduler {name} has a fine-tuning objective only with use_flow_sigmas: true and "
                         "prediction_type: flow_prediction (as Wan2.1 ships it); set them in "
                         "scheduler/scheduler_config.json or use FlowMatchEulerDiscreteScheduler")
    if name not in DDPM_SCHEDULERS:
        raise ValueError(f"scheduler {name} has no fine-tuning objective: vidgen trains with "
                         f"{', '.join(FLOW_SCHEDULERS + FLOW_SOLVERS + DDPM_SCHEDULERS)}")
    prediction = scheduler.config.prediction_type
    if prediction not in DDPM_PREDICTIONS:
        raise ValueError(f"scheduler {name} has prediction_type {prediction!r}: vidgen trains "
                         f"{' or '.join(DDPM_PREDICTIONS)}")
    return prediction


def objective_of(pipe) -> Objective:
    """The objective of a pipeline (loaded, or a meta-weight `skeleton`: nothing here reads weights)."""
    name = type(pipe).__name__
    recipe = recipe_for(name)
    if getattr(pipe, "transformer_2", None) is not None:
        raise ValueError(f"this {name} has two transformers (Wan 2.2's high- and low-noise experts): vidgen "
                         "fine-tunes pipelines with one transformer")
    target = training_target(pipe.scheduler)
    if target == "flow" and pipe.scheduler.config.get("use_dynamic_shifting") and not recipe.dynamic_shift:
        raise ValueError(f"{name}'s scheduler sets use_dynamic_shifting, which {name} itself does not use: "
                         "set it to false in scheduler/scheduler_config.json")
    return Objective(name, recipe, pipe.scheduler, target, latent_geometry(pipe))


def flow_sigmas(objective: Objective, levels: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """Uniform levels in (0, 1) -> sigmas shifted as the pipeline's scheduler shifts its schedule."""
    scheduler = objective.scheduler
    if scheduler.config.get("use_dynamic_shifting"):
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        config = scheduler.config
        mu = calculate_shift(grid[0] * grid[1] * grid[2], config.base_image_seq_len, config.max_image_seq_len,
                             config.base_shift, config.max_shift)
        return scheduler.time_shift(mu, 1.0, levels)
    shift = scheduler.config.flow_shift if type(scheduler).__name__ in FLOW_SOLVERS else scheduler.shift
    return shift * levels / (1 + (shift - 1) * levels)


def _noised(objective: Objective, x0: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor,
            grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, the timesteps the transformer sees, the target it learns) at per-sample levels in (0, 1)."""
    scheduler = objective.scheduler
    train_steps = scheduler.config.num_train_timesteps
    if objective.target == "flow":
        sigmas = flow_sigmas(objective, levels, grid).to(x0)
        sigma = sigmas.view(-1, *([1] * (x0.ndim - 1)))
        return (1 - sigma) * x0 + sigma * noise, sigmas * train_steps, noise - x0
    timesteps = (levels * train_steps).long().clamp(0, train_steps - 1).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = noise if objective.target == "epsilon" else scheduler.get_velocity(x0, noise, timesteps)
    return noisy, timesteps, target


def _loss_at(objective: Objective, transformer, latents: Latents, text: TextEmbeddings, levels: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    x0 = latents.values
    noisy, timesteps, target = _noised(objective, x0, noise, levels, latents.grid)
    dtype = _input_dtype(transformer)
    prediction = objective.recipe.predict(transformer, noisy.to(dtype), timesteps, text.to(x0.device, dtype),
                                          latents.grid, objective.geometry)
    return F.mse_loss(prediction.float(), target.float())


def _input_dtype(transformer) -> torch.dtype:
    """The dtype a transformer takes its inputs in: diffusers' own answer (`ModelMixin.dtype` skips the modules it
    keeps in float32 when the weights are bfloat16, which may come first), else its first parameter's."""
    dtype = getattr(transformer, "dtype", None)
    return dtype if isinstance(dtype, torch.dtype) else next(transformer.parameters()).dtype


def training_loss(objective: Objective, transformer, latents: Latents, text: TextEmbeddings,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """The denoising loss of one batch at noise levels and noise drawn from `generator` (a scalar, with grad)."""
    x0 = latents.values
    device = generator.device if generator is not None else x0.device  # draws follow the generator's device
    levels = torch.rand(x0.shape[0], generator=generator, device=device)
    noise = torch.randn(x0.shape, generator=generator, device=device)
    return _loss_at(objective, transformer, latents, text, levels.to(x0.device), noise.to(x0))


@torch.no_grad()
def validation_loss(objective: Objective, transformer, latents: Latents, text: TextEmbeddings, seed: int = 0,
                    levels: tuple[float, ...] = VALIDATION_LEVELS) -> float:
    """The loss averaged over fixed noise levels, each with noise from `seed`: the same weights give the same number,
    whenever it is measured (the transformer is in eval mode meanwhile, then put back)."""
    x0 = latents.values
    generator = torch.Generator("cpu").manual_seed(seed)
    was_training = transformer.training
    transformer.eval()
    try:
        losses = []
        for level in levels:
            noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0)
            batch_levels = torch.full((x0.shape[0],), level, device=x0.device)
            losses.append(_loss_at(objective, transformer, latents, text, batch_levels, noise).item())
    finally:
        transformer.train(was_training)
    return sum(losses) / len(losses)
