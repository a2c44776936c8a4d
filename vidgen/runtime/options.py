"""How a pipeline is loaded onto its device: precision and the memory switches of diffusers pipelines.

A config section shared by bulk render (`RenderConfig.pipeline`) and the serving tiers (`TierConfig.pipeline`).
Pure pydantic, so configs that hold it load without torch or diffusers.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PipelineOptions(BaseModel):
    """What a render actor or serving replica does when it loads its pipeline."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights and compute of diffusers pipelines; auto: bfloat16 on a GPU, float32 on a CPU "
                            "(vidgen models keep float32 weights and pick their autocast the same way)")
    cpu_offload: bool = Field(False, description="diffusers `enable_model_cpu_offload`: components wait in CPU "
                                                 "memory and move to the GPU one at a time (GPUs smaller than the "
                                                 "model; slower)")
    vae_tiling: bool = Field(False, description="decode frames in tiles (less GPU memory at large sizes)")
    vae_slicing: bool = Field(False, description="decode a batch one clip at a time (less GPU memory)")
