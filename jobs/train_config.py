"""The distributed training job's config, and the DeepSpeed config generated from it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from storage.objectstore import S3Config
from vidgen.training import TrainConfig


class DistributedConfig(BaseModel):
    """A Ray Train + DeepSpeed run: the model and optimisation (`train`), and how it is spread and kept."""

    model_config = ConfigDict(extra="forbid")

    train: TrainConfig = Field(default_factory=TrainConfig, description="model, loss, optimiser, steps, seed")
    workers: int = Field(2, ge=1, description="Ray Train workers (one DeepSpeed rank each)")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL and bf16 autocast")
    cpus_per_worker: int = Field(1, ge=1, description="CPUs Ray reserves per worker; also its torch threads")
    zero_stage: int = Field(2, ge=0, le=3, description="ZeRO stage: 0 = plain data parallel, 1 optimizer state, "
                                                       "2 + gradients, 3 + parameters sharded across workers")
    offload_optimizer: bool = Field(False, description="keep optimizer states in CPU memory (ZeRO-Offload)")
    gradient_accumulation: int = Field(1, ge=1, description="micro-batches per optimizer step")
    bucket_elements: int = Field(20_000_000, ge=100_000, description="size of DeepSpeed's gradient-reduce and "
                                 "parameter-gather buckets; its default (5e8) is a 2 GB fp32 buffer under ZeRO-3")
    data: str = Field("synth", description="'synth' (clips made on the fly) or a data set URI from "
                                           "`vidgen data prepare` (its train split is streamed)")
    stream_buffer_mb: int = Field(16, ge=4, description="decoded clips the data stream may hold ahead of the "
                                                         "trainers (Ray Data object store budget)")
    runs: str = Field("runs", description="where runs keep checkpoints: a folder or s3://BUCKET/PREFIX")
    out: str | None = Field(None, description="where the final model package goes (folder or s3://); "
                                              "default: RUNS/NAME/model")
    push: str | None = Field(None, description="also push the package to this registry model, e.g. "
                                               "s3://bucket/models/shapes")
    checkpoint_every: int = Field(50, ge=1, description="optimizer steps between checkpoints")
    num_to_keep: int = Field(2, ge=1, description="checkpoints kept per run")
    max_failures: int = Field(2, ge=0, description="worker failures survived by restarting from a checkpoint")
    log_every: int = Field(10, ge=1, description="optimizer steps between reported metrics")
    s3: S3Config = Field(default_factory=S3Config)


def deepspeed_config(cfg: DistributedConfig) -> dict:
    """The DeepSpeed JSON config for `cfg`. The optimizer and schedule are ours (`make_optimizer`), handed over."""
    return zero_settings(cfg.zero_stage, cfg.offload_optimizer, cfg.use_gpu, cfg.bucket_elements,
                         cfg.train.batch_size, cfg.gradient_accumulation, cfg.train.grad_clip)


def zero_settings(stage: int, offload_optimizer: bool, use_gpu: bool, bucket_elements: int, micro_batch: int,
                  gradient_accumulation: int, grad_clip: float) -> dict:
    """DeepSpeed's JSON config for a torch optimizer handed to it, whatever vidgen trains (training and
    fine-tuning share it)."""
    zero: dict = {"stage": stage, "reduce_bucket_size": bucket_elements, "allgather_bucket_size": bucket_elements}
    if stage == 3:
        zero["stage3_prefetch_bucket_size"] = bucket_elements
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": use_gpu}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": gradient_accumulation,
        "gradient_clipping": grad_clip,
        "zero_optimization": zero,
        # precision is torch autocast inside the train step, over fp32 master weights, on CPU and GPU alike
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,  # a torch AdamW
        "zero_force_ds_cpu_optimizer": False,  # DeepSpeedCPUAdam would need a compiled op; AdamW offloads fine
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
