"""LoRA on a diffusers video transformer (peft), and adapters saved in diffusers' own LoRA format.

`add_lora` freezes the transformer and adds a peft adapter on the family's attention projections (optionally also its
feed-forward ones, or any module-name suffixes given). `save_lora` writes what `pipe.load_lora_weights(folder)` in
plain diffusers loads: `pytorch_lora_weights.safetensors` through the pipeline class's own `save_lora_weights`, with
the adapter's peft config as metadata, so a rank and alpha that differ load at the scale they trained at.
It takes a state dict, not a module, so a job that shards the transformer (DeepSpeed ZeRO-3) saves what it has
gathered on one rank.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from storage.package import LORA_WEIGHTS
from vidgen.runs.finetune_recipes import Recipe, recipe_for


class LoraSettings(BaseModel):
    """How the transformer is adapted: a low-rank update W + (alpha / rank) B A on each targeted linear layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(16, ge=1, le=1024, description="Rank r of each low-rank update (trainable size grows with r).")
    alpha: float | None = Field(None, gt=0, description="Scale numerator: updates are scaled by alpha / rank; "
                                                        "unset means alpha = rank (scale 1).")
    targets: list[str] | None = Field(None, min_length=1, description="Module-name suffixes to adapt (e.g. "
                                      "'to_q', 'attn1.to_out.0'); unset means the family's attention projections "
                                      "(to_q, to_k, to_v, to_out.0).")
    feed_forward: bool = Field(False, description="Also adapt the family's feed-forward projections (more "
                               "parameters, more capacity for new motion and style).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA branch's input while training.")


def lora_targets(recipe: Recipe, settings: LoraSettings) -> list[str]:
    """The module-name suffixes the adapter goes on."""
    targets = list(settings.targets or recipe.attention_targets)
    return targets + list(recipe.feed_forward_targets) if settings.feed_forward else targets


def lora_config(recipe: Recipe, settings: LoraSettings):
    """The peft LoraConfig of these settings for this family."""
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha or settings.rank, lora_dropout=settings.dropout,
                      target_modules=lora_targets(recipe, settings), init_lora_weights=True)


def add_lora(transformer, recipe: Recipe, settings: LoraSettings) -> int:
    """Freeze `transformer` and add a LoRA adapter to it (its update starts at zero, so outputs are unchanged
    until it trains); returns the number of trainable parameters."""
    transformer.requires_grad_(False)
    transformer.add_adapter(lora_config(recipe, settings))
    return sum(p.numel() for p in transformer.parameters() if p.requires_grad)


def lora_state(transformer) -> dict:
    """The adapter's weights as peft names them (what `save_lora` takes), on whatever device they are."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(transformer)


def save_lora(folder: str | Path, pipeline_class: str, state: dict, recipe: Recipe, settings: LoraSettings) -> Path:
    """Write the adapter `state` (from `lora_state`) into `folder` in diffusers' LoRA format for `pipeline_class`;
    returns the weights file."""
    import diffusers

    if recipe_for(pipeline_class) != recipe:
        raise ValueError(f"an adapter trained with the {recipe.family} recipe cannot be saved for {pipeline_class}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cpu_state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}
    getattr(diffusers, pipeline_class).save_lora_weights(
        folder, transformer_lora_layers=cpu_state, weight_name=LORA_WEIGHTS, safe_serialization=True,
        transformer_lora_adapter_metadata=lora_config(recipe, settings).to_dict())
    return folder / LORA_WEIGHTS
