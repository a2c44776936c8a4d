"""The fine-tuning job's config (`vidgen finetune`, `python -m jobs.finetune`), and its DeepSpeed config."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs.train_config import zero_settings
from storage.objectstore import S3Config
from vidgen.precision import Precision
from vidgen.runs.finetune_lora import LoraSettings


class FinetuneConfig(BaseModel):
    """Fine-tune a diffusers pipeline's transformer on a vidgen data set: LoRA or full, on Ray Train + DeepSpeed."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="the pipeline to fine-tune: a diffusers folder, NAME@vN or NAME@ALIAS from the "
                                   "registry (on a cluster, a reference every node can reach)")
    data: str = Field(description="a data set from `vidgen data ingest` or `prepare`: a folder or s3://BUCKET/PREFIX; "
                                  "its train split trains, its eval split gives the validation loss")
    method: Literal["lora", "full"] = Field("lora", description="lora: train a low-rank adapter on the frozen "
                                            "transformer; full: train every transformer weight")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="rank, alpha and targets (method lora)")
    steps: int = Field(200, ge=1, description="optimizer steps")
    batch_size: int = Field(1, ge=1, description="clips per worker per micro-batch (all of one shape bucket)")
    gradient_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-4, gt=0, description="peak AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(10, ge=0, description="linear learning-rate warm-up, then constant")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    gradient_checkpointing: bool = Field(False, description="recompute the transformer's activations in backward: "
                                         "less memory for longer clips, ~30% more compute")
    precision: Precision = Field("auto", description="autocast dtype over float32 master weights (vidgen.precision): "
                                 "auto is bfloat16 on GPUs")
    seed: int = Field(0, description="seed of data order and training noise")
    max_shape: tuple[int, int, int] | None = Field(None, description="cap clips at (frames, height, width) before "
                                                   "they are fitted to the model's shape rule")
    validate_every: int = Field(50, ge=1, description="optimizer steps between validation losses (and at the end)")
    validation_batches: int = Field(4, ge=1, description="held-out batches the validation loss averages over")
    validation_seed: int = Field(0, description="seed of the validation loss's fixed noise")
    validation_prompts: list[str] = Field(default_factory=list, description="prompts rendered with the weights "
                                          "of every kept checkpoint, once training ends, into RUNS/NAME/validation/;"
                                          " default: the first two eval captions")
    validation_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="seeds of those "
                                        "renders, one clip per prompt and seed")
    validation_steps: int | None = Field(None, ge=1, description="sampler steps of those renders (default: the "
                                         "model's)")
    workers: int = Field(2, ge=1, description="Ray Train workers (one DeepSpeed rank each)")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL; bf16 under precision auto)")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs Ray reserves per worker; also its torch threads")
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage: 0 plain data parallel, 1 optimizer states, "
                                                       "2 + gradients, 3 + parameters sharded across workers")
    offload_optimizer: bool = Field(False, description="optimizer states in CPU memory (ZeRO-Offload)")
    bucket_elements: int = Field(20_000_000, ge=100_000, description="DeepSpeed's reduce and gather bucket size")
    runs: str = Field("runs", description="where runs keep checkpoints and metrics: a folder or s3://BUCKET/PREFIX")
    latent_cache: str | None = Field(None, description="where precomputed latents are cached (reused by every run "
                                     "of the same model, data set, shape and recipe); default RUNS/latent-cache")
    out: str | None = Field(None, description="where the result goes (adapter package, or full pipeline folder); "
                                              "default RUNS/NAME/adapter or RUNS/NAME/model")
    push: str | None = Field(None, description="also push the result to this registry model (NAME, or "
                                               "s3://BUCKET/models/NAME)")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints (and at the end)")
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept per run")
    max_failures: int = Field(2, ge=0, description="worker failures survived by restarting from the last checkpoint")
    log_every: int = Field(10, ge=1, description="optimizer steps between reported metrics")
    s3: S3Config = Field(default_factory=S3Config)

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> FinetuneConfig:
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3 (ZeRO-Offload moves partitioned "
                             "optimizer states): set zero_stage")
        return self

    @property
    def cache_root(self) -> str:
        return self.latent_cache or f"{self.runs.rstrip('/')}/latent-cache"


def finetune_deepspeed_config(cfg: FinetuneConfig) -> dict:
    """DeepSpeed's config for a fine-tuning run; the optimizer and schedule are handed over (torch AdamW)."""
    return zero_settings(cfg.zero_stage, cfg.offload_optimizer, cfg.use_gpu, cfg.bucket_elements, cfg.batch_size,
                         cfg.gradient_accumulation, cfg.grad_clip)
