"""What a distributed run leaves: a model package with a card that records its lineage, metrics and loss curve."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from jobs.train_config import DistributedConfig
from storage.cards import Lineage
from storage.datasets import open_dataset
from storage.objectstore import ObjectStore, parse_uri
from storage.package import write_sums
from storage.registry import push, upload_package
from vidgen import synth
from vidgen.model import VideoDiT
from vidgen.pipelines.packages import save_model
from vidgen.runs.cards import dataset_licences, trained_model_card, write_metrics_csv
from vidgen.runs.eval_runs import PERCEPTUAL_CLIPS, evaluate_splits, perceptual_eval
from vidgen.runs.local_training import trained_pipeline
from vidgen.runs.plots import loss_curve_png
from vidgen.text import TextEncoder

log = logging.getLogger(__name__)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _lineage(cfg: DistributedConfig, store: ObjectStore, world: int, steps: int) -> Lineage:
    """The run's lineage. The worker that writes the package was not started from the run's command line, so the
    command recorded is the one that repeats the run: the job with the job.json kept in the run's folder (`run`)."""
    import ray.train

    run = parse_uri(cfg.runs).join(ray.train.get_context().get_experiment_name()).uri
    facts = {"workers": world, "zero_stage": cfg.zero_stage, "training_steps": steps, "run": run}
    if cfg.data == "synth":
        source = {"dataset": f"vidgen-builtin-{synth.GENERATOR_VERSION} (generated on the fly)", **facts}
    else:
        dataset = open_dataset(store, cfg.data)
        source = {"dataset": dataset.location.uri, "dataset_card_sha256": dataset.index.card_sha256,
                  "dataset_samples": dataset.index.num_samples,
                  "dataset_licences": dataset_licences(dataset.card, dataset.index.num_samples), **facts}
    return Lineage("python -m jobs.train --config job.json", cfg.train.seed, source)


def write_package(cfg: DistributedConfig, weights: dict[str, torch.Tensor], history: list[dict],
                  autoencoder_losses: list[float], world: int, encoder: TextEncoder) -> None:
    """Evaluate the consolidated weights, write the package with card, metrics.csv and loss curve, upload it."""
    store = ObjectStore(cfg.s3)
    model = VideoDiT(cfg.train.model_config_resolved())
    model.load_state_dict(weights)
    model.eval()
    accuracy, perceptual = {}, None
    if cfg.data == "synth":  # prompt accuracy reads clips of the built-in world back: it says nothing of others
        pipeline = trained_pipeline(model, cfg.train, encoder)
        accuracy = evaluate_splits(pipeline, cfg.train.eval_clips, splits=("seen", "heldout")).splits
        perceptual = perceptual_eval(pipeline, min(cfg.train.eval_clips, PERCEPTUAL_CLIPS))
    steps = history[-1]["step"] if history else 0
    metrics = {"first_loss": _mean([h["loss"] for h in history[:10]]),
               "final_loss": _mean([h["loss"] for h in history[-10:]]),
               "autoencoder_mse": _mean(autoencoder_losses[-20:])}
    lineage = _lineage(cfg, store, world, steps)
    how_made = (f"Trained with Ray Train + DeepSpeed ZeRO-{cfg.zero_stage} on {world} workers for {steps} optimizer "
                f"steps of {cfg.train.batch_size * cfg.gradient_accumulation} clips per worker, from "
                f"{lineage.source['dataset']}. Weights were consolidated from the ZeRO shards into one fp32 state "
                "dict.")
    out = parse_uri(cfg.out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_model(model, folder, card=trained_model_card(model, cfg.train, lineage, metrics, accuracy, how_made,
                                                             perceptual=perceptual),
                   extra={"sampler": cfg.train.sampler.model_dump(), "train": cfg.train.model_dump(mode="json")},
                   weights_dtype=getattr(torch, cfg.train.save_dtype))
        write_metrics_csv(history, folder / "metrics.csv")
        loss_curve_png(history, folder / "loss_curve.png")
        sums = write_sums(folder)
        upload_package(folder, out, sums, store)
        version = push(folder, cfg.push, store) if cfg.push else None
    log.info("model package written to %s%s", out.uri, f" and pushed as {cfg.push}@{version}" if version else "")
