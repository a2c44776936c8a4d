"""A LoRA adapter package for a tiny diffusers pipeline, made the way `vidgen finetune` leaves one (diffusers' LoRA
weights, adapter.json naming the base by digest, SHA256SUMS) but with random adapter weights instead of training,
so it changes what the pipeline renders from the first step."""

from pathlib import Path

import torch

ADAPTER_SCALE = 0.3  # std of the random LoRA weights: large enough that frames differ by grey levels, not noise


def make_adapter(folder: Path, base_folder: Path, seed: int) -> Path:
    """An adapter package in `folder` (made once) for the Wan pipeline in `base_folder`, its weights from `seed`."""
    from diffusers import DiffusionPipeline

    from storage.package import write_sums
    from vidgen.pipelines.adapters import AdapterInfo
    from vidgen.pipelines.references import model_digest, verify_model
    from vidgen.runs.finetune_lora import LoraSettings, add_lora, lora_state, lora_targets, save_lora
    from vidgen.runs.finetune_recipes import recipe_for

    folder = Path(folder)
    if folder.exists():
        return folder
    base = verify_model(str(base_folder))
    pipe = DiffusionPipeline.from_pretrained(base_folder, local_files_only=True)
    recipe, settings = recipe_for("WanPipeline"), LoraSettings(rank=4, alpha=8)
    add_lora(pipe.transformer, recipe, settings)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in pipe.transformer.named_parameters():
            if "lora_" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * ADAPTER_SCALE)
    save_lora(folder, "WanPipeline", lora_state(pipe.transformer), recipe, settings)
    info = AdapterInfo("WanPipeline", base.label, model_digest(base.sums), settings.rank, float(settings.alpha),
                       lora_targets(recipe, settings))
    (folder / "adapter.json").write_text(info.to_json())
    write_sums(folder)
    return folder
