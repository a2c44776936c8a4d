"""Offline k-step trajectory distillation with classifier-free guidance folded in.

The teacher samples with `teacher_steps` Euler steps and guidance (two passes a step); a trajectory keeps its
states at the student's K timesteps t_i = 1 - i / K and its final latents x0, all fixed by the clip's noise z (its
seed). The student, initialised from the teacher, learns to predict the teacher's x0 at (x_t_i, t_i) with the
prompt and no guidance, so at inference it runs K steps of one pass each: `sample(student, ..., steps=K,
guidance=1.0)`. In a share of the batches (`own_rollout_share`) the student is fed the states its own K-step
roll-out from z reaches instead of the teacher's: the target is still known, because z fixes the teacher's
endpoint, and the student learns to correct its own errors rather than only the teacher's path.

Why this method (from a study of DMD2, LCM, reflow, progressive and shortcut distillation): it needs no second
network (DMD2's fake-score critic), no schedule of rounds (progressive's 24 -> 12 -> 6 -> 3), and its targets
are rendered once, in bulk, by the same actor pool that renders manifests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from vidgen.precision import autocast
from vidgen.text import TextEmbedding


class DistillConfig(BaseModel):
    """How the student is trained on teacher trajectories."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(2, ge=1, le=8, description="the student's sampler steps K (one pass each, no guidance)")
    train_steps: int = Field(2000, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1, description="trajectory points per optimiser step")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate (the student starts at the teacher's weights)")
    own_rollout_share: float = Field(0.5, ge=0, le=1, description="share of batches fed the student's own states")
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0


def student_times(k: int) -> list[float]:
    """The student's timesteps t_i = 1 - i / K, i < K (the sampler's grid of `sample(steps=K)`)."""
    return [1.0 - i / k for i in range(k)]


def teacher_steps_at(k: int, teacher_steps: int) -> list[int]:
    """The teacher's step indices whose input states sit at the student's timesteps (K must divide them)."""
    if teacher_steps % k:
        raise ValueError(f"the student's steps ({k}) must divide the teacher's ({teacher_steps}), so its timesteps "
                         "lie on the teacher's grid; pick one of "
                         f"{[d for d in range(1, 9) if teacher_steps % d == 0]}")
    return [i * teacher_steps // k for i in range(k)]


@dataclass
class Trajectories:
    """N teacher trajectories: noise z (N, C, T, h, w), states {teacher step: (N, C, T, h, w)}, final x0, the
    prompts' embeddings and the teacher's step count."""

    z: torch.Tensor
    states: dict[int, torch.Tensor]
    x0: torch.Tensor
    text: TextEmbedding
    teacher_steps: int

    def __len__(self) -> int:
        return len(self.z)


def _rollout(student, z: torch.Tensor, text: TextEmbedding, times: list[float], until: torch.Tensor) -> torch.Tensor:
    """The states the student's own Euler roll-out from z reaches at step `until[b]` of its K-step grid."""
    x, out = z, z.clone()
    for i in range(int(until.max())):
        t = times[i]
        t_next = times[i + 1] if i + 1 < len(times) else 0.0
        x0_hat = student(x, torch.full((len(x),), t), text.tokens, text.mask, text.pooled).float()
        x = x + (t_next - t) * (x - x0_hat) / t
        out[until == i + 1] = x[until == i + 1]
    return out


def distill_loss(student, data: Trajectories, index: torch.Tensor, k: int, own_rollout: bool,
                 generator: torch.Generator) -> torch.Tensor:
    """MSE of the student's x0 at a random one of its K timesteps against the teacher's x0, for trajectories
    `index`; the state at that timestep is the teacher's, or with `own_rollout` the student's own (no gradient
    through the roll-out)."""
    times, at = student_times(k), teacher_steps_at(k, data.teacher_steps)
    step = torch.randint(k, (len(index),), generator=generator)
    text = TextEmbedding(data.text.tokens[index], data.text.mask[index], data.text.pooled[index])
    if own_rollout:
        with torch.no_grad():
            x_t = _rollout(student, data.z[index], text, times, step)
    else:
        x_t = torch.stack([data.states[at[int(s)]][int(j)] for s, j in zip(step, index, strict=True)])
    t = torch.tensor([times[int(s)] for s in step])
    x0_hat = student(x_t, t, text.tokens, text.mask, text.pooled).float()
    return ((x0_hat - data.x0[index]) ** 2).mean()


def distill(teacher, data: Trajectories, cfg: DistillConfig, progress=None, autocast_dtype: torch.dtype | None = None):
    """Train a K-step student from the teacher's weights on its trajectories; returns (student, loss history).
    `progress(step, loss)` after each optimiser step. The autoencoder stays frozen, as in the teacher. Forward
    passes run under autocast to `autocast_dtype` when given."""
    teacher_steps_at(cfg.steps, data.teacher_steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    student = copy.deepcopy(teacher).train()
    params = student.diffusion_parameters()
    for p in student.autoencoder.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    history = []
    for step in range(cfg.train_steps):
        index = torch.randint(len(data), (min(cfg.batch_size, len(data)),), generator=generator)
        own = bool(torch.rand((), generator=generator) < cfg.own_rollout_share) and cfg.steps > 1
        with autocast(autocast_dtype, next(student.parameters()).device.type):
            loss = distill_loss(student, data, index, cfg.steps, own, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optimiser.step()
        history.append({"step": step + 1, "loss": float(loss.detach()), "own_rollout": own})
        if progress is not None:
            progress(step + 1, float(loss.detach()))
    return student.eval(), history
