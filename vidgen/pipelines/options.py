"""How a pipeline is loaded onto its device: precision, the memory switches of diffusers pipelines, step caching.

A config section shared by bulk render (`RenderConfig.pipeline`) and the serving tiers (`TierConfig.pipeline`).
Pure pydantic, so configs that hold it load without torch or diffusers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vidgen.precision import Precision

CacheKind = Literal["first_block", "sea"]


class StepCacheOptions(BaseModel):
    """Step caching: denoising steps whose transformer input barely moved reuse the last full step's block output."""

    model_config = ConfigDict(extra="forbid")

    kind: CacheKind = Field(description="first_block: run the first transformer block each step and reuse the "
                                        "cached residual of the others while its output's relative change since "
                                        "the last full step stays under `threshold` (vidgen models and diffusers "
                                        "pipelines); sea: diffusers' SeaCache (diffusers pipelines it supports: Wan)")
    threshold: float = Field(0.05, ge=0, description="largest relative change that still reuses the cache: 0 never "
                                                     "reuses (the uncached output), higher skips more steps at a "
                                                     "quality cost (docs/BENCHMARKS.md, step caching)")

    @classmethod
    def from_flag(cls, text: str) -> StepCacheOptions:
        """`--cache KIND[:THRESHOLD]` (e.g. `first_block:0.1`); a ValueError naming the flag when it is neither."""
        kind, _, threshold = text.partition(":")
        try:
            return cls(kind=kind, **({"threshold": threshold} if threshold else {}))
        except ValidationError as e:
            problem = e.errors()[0]
            raise ValueError(f"--cache {text}: {problem['loc'][0]}: {problem['msg']}; "
                             "give KIND[:THRESHOLD], e.g. first_block:0.1") from None


class PipelineOptions(BaseModel):
    """What a render actor or serving replica does when it loads its pipeline."""

    model_config = ConfigDict(extra="forbid")

    dtype: Precision = Field(
        "auto", description="compute precision (`vidgen.precision`): diffusers pipelines load their weights in it, "
                            "vidgen models keep float32 weights and autocast to it; auto: bfloat16 on GPUs and on "
                            "CPUs with native bf16 matmuls, float32 elsewhere")
    cpu_offload: bool = Field(False, description="diffusers `enable_model_cpu_offload`: components wait in CPU "
                                                 "memory and move to the GPU one at a time (GPUs smaller than the "
                                                 "model; slower)")
    vae_tiling: bool = Field(False, description="decode frames in tiles (less GPU memory at large sizes)")
    vae_slicing: bool = Field(False, description="decode a batch one clip at a time (less GPU memory)")
    lora: str | None = Field(None, description="a LoRA adapter from `vidgen finetune` (folder, NAME@vN, NAME@ALIAS) "
                                               "fused into a diffusers model once at load; refused unless it was "
                                               "trained on this model")
    lora_scale: float = Field(1.0, description="strength of the adapter: 1 as trained, 0 the base model's output")
    cache: StepCacheOptions | None = Field(None, description="step caching, e.g. {kind: first_block, threshold: "
                                                             "0.1}; off when absent")
