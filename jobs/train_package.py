"""What a distributed run leaves: a model package with a card that records its lineage, metrics and loss curve."""

from __future__ import annotations

import csv
import logging
import tempfile
from pathlib import Path

import torch

from jobs.train_config import DistributedConfig
from storage.cards import render_card
from storage.datasets import open_dataset
from storage.objectstore import ObjectStore, parse_uri
from storage.package import write_sums
from storage.registry import push, upload_package
from vidgen import synth
from vidgen.checkpoint import save_model
from vidgen.model import VideoDiT
from vidgen.pipelines import git_commit
from vidgen.report import loss_curve_png
from vidgen.text import TextEncoder
from vidgen.training import eval_specs, evaluate

log = logging.getLogger(__name__)


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def _lineage(cfg: DistributedConfig, store: ObjectStore) -> dict:
    if cfg.data == "synth":
        return {"dataset": f"vidgen-builtin-{synth.GENERATOR_VERSION} (generated on the fly)"}
    dataset = open_dataset(store, cfg.data)
    return {"dataset": dataset.location.uri, "dataset_card_sha256": dataset.index.card_sha256,
            "dataset_samples": dataset.index.num_samples}


def _card(cfg: DistributedConfig, model: VideoDiT, history: list[dict], accuracy: dict, lineage: dict,
          world: int, autoencoder_losses: list[float]) -> str:
    steps = history[-1]["step"] if history else 0
    meta = {
        "pipeline_tag": "text-to-video",
        "library_name": "vidgen",
        "license": "apache-2.0",
        "datasets": [lineage["dataset"]],
        "model_preset": cfg.train.preset,
        "params": model.num_params(),
        "lineage": {**lineage, "git_commit": git_commit(), "seed": cfg.train.seed, "workers": world,
                    "zero_stage": cfg.zero_stage, "training_steps": steps},
        "metrics": {"final_loss": round(_mean([h["loss"] for h in history[-10:]]), 5),
                    "first_loss": round(_mean([h["loss"] for h in history[:10]]), 5),
                    "autoencoder_mse": round(_mean(autoencoder_losses[-20:]), 5),
                    **{f"prompt_accuracy_{split}": round(acc["all_three"], 3) for split, acc in accuracy.items()}},
        "train_config": cfg.train.model_dump(mode="json"),
    }
    body = f"""# vidgen {cfg.train.preset} model (distributed run)

Trained with Ray Train + DeepSpeed ZeRO-{cfg.zero_stage} on {world} workers for {steps} optimizer steps of
{cfg.train.batch_size * cfg.gradient_accumulation} clips per worker, from {lineage['dataset']}. Weights were
consolidated from the ZeRO shards into one fp32 state dict. Prompt accuracy (colour, shape and direction read back
from the pixels by `vidgen.metrics.detect`) on {cfg.train.eval_clips} clips per split:
""" + "".join(f"- {split}: {acc['all_three']:.2f}\n" for split, acc in accuracy.items())
    return render_card(meta, body)


def write_package(cfg: DistributedConfig, weights: dict[str, torch.Tensor], history: list[dict],
                  autoencoder_losses: list[float], world: int, encoder: TextEncoder) -> None:
    """Evaluate the consolidated weights, write the package with card, metrics.csv and loss curve, upload it."""
    store = ObjectStore(cfg.s3)
    model = VideoDiT(cfg.train.model_config_resolved())
    model.load_state_dict(weights)
    model.eval()
    dtype = cfg.autocast_dtype() if not cfg.use_gpu else None
    accuracy = {split: evaluate(model, encoder, eval_specs(model.config, split, cfg.train.eval_clips, seed=0),
                                cfg.train.sampler, dtype).to_dict()
                for split in ("train", "heldout")}
    out = parse_uri(cfg.out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_model(model, folder, card=_card(cfg, model, history, accuracy, _lineage(cfg, store), world,
                                                     autoencoder_losses),
                   extra={"sampler": cfg.train.sampler.model_dump(), "train": cfg.train.model_dump(mode="json")},
                   weights_dtype=getattr(torch, cfg.train.save_dtype))
        with open(folder / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
        loss_curve_png(history, folder / "loss_curve.png")
        sums = write_sums(folder)
        upload_package(folder, out, sums, store)
        version = push(folder, cfg.push, store) if cfg.push else None
    log.info("model package written to %s%s", out.uri, f" and pushed as {cfg.push}@{version}" if version else "")
