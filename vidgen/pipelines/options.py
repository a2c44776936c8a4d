"""How a pipeline is loaded onto its device: precision and the memory switches of diffusers pipelines.

A config section shared by bulk render (`RenderConfig.pipeline`) and the serving tiers (`TierConfig.pipeline`).
Pure pydantic, so configs that hold it load without torch or diffusers.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from vidgen.precision import Precision


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
