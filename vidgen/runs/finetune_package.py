"""What a fine-tuning run leaves: an adapter package (method lora) or a whole pipeline folder (method full), each
with a card and SHA256SUMS, so it verifies, pushes, versions and renders like any model.

Both are made from the run's last checkpoint (the trainable weights, whole) and the base model it started from:
- adapter: the LoRA weights in diffusers' format (`pipe.load_lora_weights(folder)` in plain diffusers loads them),
  adapter.json naming the base by label and digest (`vidgen.pipelines.adapters`), card, sums;
- full: every file of the base but the transformer's weights, the new transformer as safetensors, card, sums.
"""

from __future__ import annotations

import datetime
import json
import shutil
from pathlib import Path

import torch

from storage.cards import Lineage, model_card
from storage.package import CARD_FILE, LORA_WEIGHTS, ModelFileError, open_package_file, sha256_file, write_sums
from vidgen.pipelines.adapters import AdapterInfo
from vidgen.pipelines.references import VerifiedModel, model_digest
from vidgen.runs.cards import loss_span_text, write_metrics_csv
from vidgen.runs.finetune_lora import LoraSettings, lora_state, lora_targets, save_lora
from vidgen.runs.finetune_recipes import recipe_for


def _body(title: str, what: str, run: dict) -> str:
    validation = run["validation"]
    rows = "\n".join(f"| {v['step']} | {v['val_loss']:.4f} |" for v in validation)
    return f"""# {title}

{what}

Trained {run['steps']} steps on `{run['data']}` ({run['workers']} workers, ZeRO-{run['zero_stage']}); training
{loss_span_text(run['first_loss'], run['last_loss'], run.get('loss_window', 1))}. Validation loss (held-out
latents, fixed noise levels and seeds, comparable across steps and runs):

| step | validation loss |
|---|---|
{rows}

metrics.csv holds every step. Every file is listed in SHA256SUMS and checked before anything loads.
"""


def _meta(base: VerifiedModel, run: dict, extra: dict) -> dict:
    return {"library_name": "diffusers", "pipeline_tag": "text-to-video", "base_model": base.label,
            "base_digest": model_digest(base.sums), **extra,
            "metrics": {"first_loss": run["first_loss"], "last_loss": run["last_loss"],
                        "val_loss": run["validation"][-1]["val_loss"], "steps": run["steps"]},
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def _lineage(run: dict) -> Lineage:
    return Lineage(run["command"], run["seed"], {"dataset": run["data"], "dataset_digest": run["data_digest"],
                                                 "dataset_card": run.get("data_card", {}), "run": run["run"]})


def write_adapter_package(folder: Path, base: VerifiedModel, pipeline_class: str, transformer: torch.nn.Module,
                          settings: LoraSettings, run: dict) -> Path:
    """`transformer`: the base's, with the run's LoRA adapter added and its trained weights loaded."""
    recipe = recipe_for(pipeline_class)
    folder.mkdir(parents=True, exist_ok=False)
    save_lora(folder, pipeline_class, lora_state(transformer), recipe, settings)
    targets = lora_targets(recipe, settings)
    info = AdapterInfo(pipeline_class, base.label, model_digest(base.sums), settings.rank,
                       float(settings.alpha or settings.rank), targets)
    (folder / "adapter.json").write_text(info.to_json())
    write_metrics_csv(run["history"], folder / "metrics.csv")
    what = (f"A LoRA adapter (rank {settings.rank}, alpha {info.alpha:g}, on {', '.join(targets)}) for "
            f"`{base.label}` ({pipeline_class}). Render with `vidgen render --model BASE --lora THIS`, or in plain "
            f"diffusers: `pipe.load_lora_weights(folder, weight_name='{LORA_WEIGHTS}')`.")
    meta = _meta(base, run, {"adapter": {"rank": settings.rank, "alpha": info.alpha, "targets": targets}})
    (folder / CARD_FILE).write_text(model_card(meta, _lineage(run), _body(f"LoRA of {base.label}", what, run)))
    write_sums(folder)
    return folder


def write_full_package(folder: Path, base: VerifiedModel, pipeline_class: str, transformer: torch.nn.Module,
                       run: dict) -> Path:
    """`transformer`: the base's, with the run's trained weights loaded. The base's other files are copied as
    verified."""
    folder.mkdir(parents=True, exist_ok=False)
    for name in sorted(base.sums):
        if name.startswith("transformer/") or name in (CARD_FILE, "SHA256SUMS"):
            continue
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        with open_package_file(base.folder, name) as source, open(folder / name, "xb") as copy:
            shutil.copyfileobj(source, copy)
        if sha256_file(folder / name) != base.sums[name]:
            raise ModelFileError(f"{base.folder / name} changed since {base.label} was verified; fine-tune again")
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    write_metrics_csv(run["history"], folder / "metrics.csv")
    what = f"`{base.label}` ({pipeline_class}) with every transformer weight fine-tuned; the rest as in the base."
    (folder / CARD_FILE).write_text(model_card(_meta(base, run, {"license": run.get("license", "other")}),
                                               _lineage(run), _body(f"Fine-tuned {base.label}", what, run)))
    (folder / "finetune.json").write_text(json.dumps({"base_model": base.label,
                                                      "base_digest": model_digest(base.sums)}, indent=1) + "\n")
    write_sums(folder)
    return folder
