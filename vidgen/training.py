"""Training pieces every trainer shares: the config, synthetic batches, the train step and EMA; the local trainer.

`train_step` is the one step: the local trainer below calls it, and a distributed trainer (DeepSpeed does its
own backward and step) reuses `compute_loss`, which holds everything up to the loss.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vidgen import synth
from vidgen.clip_request import problems_of
from vidgen.diffusion import FlowConfig, SamplerConfig, clips_to_tensor, flow_loss
from vidgen.model import PRESETS, ModelConfig, VideoDiT
from vidgen.perf import model_flops_utilisation
from vidgen.precision import Precision, autocast, autocast_dtype
from vidgen.text import TextEmbedding, TextEncoder, encode_each
from vidgen.threads import use_torch_threads

log = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Everything a training run needs; loaded from a YAML preset in vidgen/configs/ and overridable from the CLI."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field("tiny", description="model preset name from vidgen.model.PRESETS")
    model: dict = Field(default_factory=dict, description="overrides of the preset's ModelConfig fields")
    flow: FlowConfig = Field(default_factory=FlowConfig)
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    batch_size: int = Field(32, ge=1, description="clips per optimizer step (per worker when distributed)")
    lr: float = Field(1e-3, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(200, ge=0, description="linear learning-rate warm-up")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of weights used for sampling; 0 disables")
    autoencoder_steps: int = Field(600, ge=1, description="steps of stage 1: training the frame autoencoder")
    autoencoder_lr: float = Field(2e-3, gt=0, description="AdamW learning rate of the autoencoder")
    autoencoder_latent_noise: float = Field(0.1, ge=0, description="noise on latents while training the decoder")
    max_steps: int = Field(1000, ge=1, description="stop after this many optimizer steps")
    max_minutes: float | None = Field(None, gt=0, description="or after this much wall-clock training time, "
                                      "autoencoder stage included (at least one transformer step always runs)")
    eval_every_minutes: float | None = Field(None, gt=0, description="evaluate prompt accuracy this often")
    eval_clips: int = Field(96, ge=1, description="clips per split for each evaluation")
    seed: int = Field(0, description="seeds data, noise and initial weights")
    precision: Precision = Field("auto", description="autocast dtype (`vidgen.precision`); auto: bfloat16 on GPUs "
                                                    "and CPUs with native bf16, else float32")
    torch_threads: int | None = Field(None, ge=1, description="torch threads; default: all cores")
    save_dtype: str = Field("float32", pattern="^(float32|float16|bfloat16)$",
                            description="dtype of the saved weights; float16 halves the file")
    memorization_clips: int = Field(16, ge=0, description="trained on a data set in one process: generations per "
                                    "kind of prompt (training captions, held-out prompts) in the card's memorization "
                                    "check; 0 skips (distributed runs: `vidgen eval --memorization`)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, name: str) -> str:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return name

    @model_validator(mode="after")
    def _valid_model(self) -> TrainConfig:
        try:
            self.model_config_resolved()
        except ValidationError as err:
            raise ValueError(f"model overrides: {'; '.join(problems_of(err))}") from None
        return self

    def model_config_resolved(self) -> ModelConfig:
        return ModelConfig(**{**PRESETS[self.preset].model_dump(), **self.model})


# --- data ---


@dataclass
class Batch:
    """A training batch: clean clips x0 (B, 3, T, H, W) in [-1, 1] and their captions."""

    x0: torch.Tensor
    captions: list[str]


def encode_batch(batch: Batch, encoder: TextEncoder) -> tuple[Batch, TextEmbedding | None]:
    """The batch with its captions encoded. A data set may hold any caption: samples whose caption the encoder
    refuses (too many tokens) are dropped with a warning, so one sample cannot end a run; (empty batch, None) when
    every caption is refused."""
    text, refused = encode_each(encoder, batch.captions)
    if not refused:
        return batch, text
    for reason in refused.values():
        log.warning("skipped a training sample: %s", reason)
    keep = [i for i in range(len(batch.captions)) if i not in refused]
    return Batch(batch.x0[keep], [batch.captions[i] for i in keep]), text


def synth_batches(cfg: ModelConfig, batch_size: int, seed: int) -> Iterator[Batch]:
    """An endless stream of freshly rendered training clips (training compositions and templates only)."""
    rng = np.random.default_rng(seed)
    while True:
        specs = synth.sample_specs(batch_size, int(rng.integers(2**31)), "train", cfg.frames, cfg.height, cfg.width)
        yield Batch(clips_to_tensor(synth.render_batch(specs)), [s.caption for s in specs])


# --- the train step ---


def compute_loss(model, batch: Batch, text: TextEmbedding, flow: FlowConfig, dtype: torch.dtype | None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """The diffusion loss of one batch of clips, under bf16 autocast when `dtype` is set; shared by every trainer.

    Clips are encoded by the model's frozen autoencoder first; the loss trains the transformer only.
    """
    with autocast(dtype, batch.x0.device.type):
        with torch.no_grad():
            latents = model.autoencoder.encode(batch.x0).float()
        return flow_loss(model, latents, text, flow, generator)


def train_step(model, optimizer, scheduler, batch: Batch, text: TextEmbedding, cfg: TrainConfig,
               dtype: torch.dtype | None, generator: torch.Generator | None = None) -> dict[str, float]:
    """One optimizer step: loss, backward, clip, step. Returns the numbers worth logging."""
    model.train()
    loss = compute_loss(model, batch, text, cfg.flow, dtype, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.diffusion_parameters(), cfg.grad_clip)
    optimizer.step()
    scheduler.step()
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": scheduler.get_last_lr()[0]}


def make_optimizer(model, cfg: TrainConfig):
    """AdamW over the transformer with linear warm-up, then constant (runs are time-boxed: no decay horizon)."""
    optimizer = torch.optim.AdamW(model.diffusion_parameters(), lr=cfg.lr, betas=(0.9, 0.99),
                                  weight_decay=cfg.weight_decay)
    warmup = max(cfg.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return optimizer, scheduler


def train_autoencoder(model: VideoDiT, batches: Iterator[Batch], cfg: TrainConfig, dtype: torch.dtype | None,
                      reduce_gradients: Callable[[torch.nn.Module], None] | None = None) -> list[float]:
    """Stage 1: fit the model's frame autoencoder to clips, set its latent scale, then freeze it.

    A data-parallel caller passes `reduce_gradients` (average the gradients across workers before each step).
    """
    ae = model.autoencoder.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(ae.parameters(), lr=cfg.autoencoder_lr)
    losses = []
    for _ in range(cfg.autoencoder_steps):
        with autocast(dtype, next(ae.parameters()).device.type):
            loss = ae.reconstruction_loss(next(batches).x0, cfg.autoencoder_latent_noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if reduce_gradients is not None:
            reduce_gradients(ae)
        optimizer.step()
        losses.append(loss.item())
    ae.eval().requires_grad_(False)
    ae.calibrate(torch.cat([next(batches).x0 for _ in range(2)]))
    return losses


class EMA:
    """Exponential moving average of a model's weights; sampling from it gives cleaner clips."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))  # short warm-up so early EMA is not all init
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1 - decay)


# --- the local trainer ---

# model -> {split: prompt accuracy as a dict}, `seen` and `heldout` at least (`vidgen.evaluation.SPLITS` names them)
Evaluate = Callable[[VideoDiT], dict[str, dict]]


@dataclass
class TrainResult:
    """What a finished local run leaves: the EMA model, per-step history and the evaluation curve."""

    model: VideoDiT
    history: list[dict]
    evals: list[dict]
    minutes: float
    steps: int
    autoencoder_losses: list[float]

    def mfu(self, batch_size: int, peak_flops_per_s: float) -> float:
        """Model FLOP utilisation over the transformer steps (data time excluded; it is in `history`)."""
        step_seconds = sum(h["step_s"] for h in self.history)
        return model_flops_utilisation(3 * self.model.flops_per_sample(), self.steps * batch_size, step_seconds,
                                       peak_flops_per_s)


def train_local(cfg: TrainConfig, encoder: TextEncoder, on_step: Callable[[dict], None] | None = None,
                batches: Iterator[Batch] | None = None, autoencoder: dict | None = None,
                evaluate: Evaluate | None = None, start: dict | None = None) -> TrainResult:
    """Single-process training until max_steps or max_minutes, on the built-in world or on `batches`.

    `autoencoder`: the state dict of a trained frame autoencoder to reuse, frozen, instead of training one (stage 1
    is skipped). `evaluate`: called every `eval_every_minutes` with the model clips are sampled from (the EMA);
    its rows are the result's `evals`. The run layer supplies it (`vidgen.runs.local_training`), since making
    clips goes through a pipeline, which the core does not know; without it nothing is evaluated during training.
    `start`: a whole model's state dict to fine-tune from instead of fresh weights; its autoencoder stays frozen.
    """
    use_torch_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model_config_resolved()
    model = VideoDiT(mcfg)
    dtype = autocast_dtype(cfg.precision)
    generator = torch.Generator().manual_seed(cfg.seed)
    log.info("model %s: %.2fM params, %d tokens, dtype %s", cfg.preset, model.num_params() / 1e6,
             mcfg.num_tokens, dtype or torch.float32)
    batches = synth_batches(mcfg, cfg.batch_size, cfg.seed) if batches is None else batches
    if start is not None:
        model.load_state_dict(start)
        autoencoder = model.autoencoder.state_dict()
        log.info("weights: started from the given model (fine-tuning)")

    started = time.perf_counter()
    if autoencoder is not None:
        model.autoencoder.load_state_dict(autoencoder)
        model.autoencoder.eval().requires_grad_(False)
        ae_losses = []
        log.info("autoencoder: reused (frozen, latent scale %.3f); stage 1 skipped", float(model.autoencoder.scale))
    else:
        ae_losses = train_autoencoder(model, batches, cfg, dtype)
        log.info("autoencoder: %d steps in %.1f min, reconstruction MSE %.4f -> %.4f", cfg.autoencoder_steps,
                 (time.perf_counter() - started) / 60, ae_losses[0], float(np.mean(ae_losses[-20:])))
    train_seconds = time.perf_counter() - started

    optimizer, scheduler = make_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    history, evals = [], []
    next_eval = cfg.eval_every_minutes
    step = 0
    while step == 0 or (step < cfg.max_steps and (cfg.max_minutes is None or train_seconds < cfg.max_minutes * 60)):
        t0 = time.perf_counter()
        batch = next(batches)
        text = encoder.encode(batch.captions)
        t1 = time.perf_counter()
        stats = train_step(model, optimizer, scheduler, batch, text, cfg, dtype, generator)
        if ema is not None:
            ema.update(model, step)
        t2 = time.perf_counter()
        step += 1
        train_seconds += t2 - t0
        stats.update(step=step, minutes=train_seconds / 60, data_s=t1 - t0, step_s=t2 - t1,
                     samples_per_s=cfg.batch_size / (t2 - t0))
        history.append(stats)
        if on_step is not None:
            on_step(stats)
        if evaluate is not None and next_eval is not None and train_seconds >= next_eval * 60:
            evals.append(_evaluate_during_training(evaluate, ema.model if ema else model, step, train_seconds))
            next_eval += cfg.eval_every_minutes
    final = ema.model if ema is not None else model
    return TrainResult(final.eval(), history, evals, train_seconds / 60, step, ae_losses)


def _evaluate_during_training(evaluate: Evaluate, model: VideoDiT, step: int, train_seconds: float) -> dict:
    """One row of the evaluation curve; evaluation time is not counted as training time."""
    row = {"step": step, "minutes": round(train_seconds / 60, 2), **evaluate(model)}
    log.info("eval at %.1f min (step %d): seen all-three %.2f, held-out %.2f", row["minutes"], step,
             row["seen"]["all_three"], row["heldout"]["all_three"])
    return row
