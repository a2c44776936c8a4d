"""`vidgen train` in one process: train on the built-in world or a data set, then write the model package and its
artifacts."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from storage.audits import warn_unacted_audit_flags
from storage.cards import Lineage, invoked_command
from storage.datasets import open_dataset
from storage.objectstore import ObjectStore
from storage.package import CARD_FILE
from storage.samples import ReaderConfig, card_clip_shape, iter_clips
from vidgen import synth
from vidgen.diffusion import clips_to_tensor
from vidgen.model import VideoDiT
from vidgen.perf import matmul_flops_per_s
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.packages import load_package, save_model, write_sums
from vidgen.pipelines.references import resolve_model
from vidgen.pipelines.vidgen_package import VidgenPipeline
from vidgen.precision import autocast_dtype
from vidgen.runs.cards import dataset_licences, loss_span, trained_model_card, write_metrics_csv
from vidgen.runs.eval_runs import PERCEPTUAL_CLIPS, SAMPLE_PROMPTS, evaluate_splits, perceptual_eval
from vidgen.runs.generate import generate
from vidgen.runs.memorization import memorization_report
from vidgen.runs.plots import contact_sheet_png, loss_curve_png
from vidgen.text import TextEncoder
from vidgen.training import Batch, Evaluate, TrainConfig, synth_batches, train_local


def trained_pipeline(model: VideoDiT, cfg: TrainConfig, encoder: TextEncoder) -> VidgenPipeline:
    """A model a run trained, held in memory, as a pipeline sampling at the run's sampler settings and precision:
    what the run measures is made the way a render or a server makes it."""
    return VidgenPipeline.from_model(model, cfg.sampler, encoder, options=PipelineOptions(dtype=cfg.precision))


def world_evaluation(cfg: TrainConfig, encoder: TextEncoder) -> Evaluate:
    """What `train_local` calls during a run on the built-in world: prompt accuracy on seen and held-out
    compositions, `eval_clips` each, with the same prompts and seeds at every evaluation so the curve compares like
    with like."""
    def evaluate(model: VideoDiT) -> dict[str, dict]:
        pipeline = trained_pipeline(model, cfg, encoder)
        return evaluate_splits(pipeline, cfg.eval_clips, splits=("seen", "heldout")).splits

    return evaluate


@torch.no_grad()
def _reconstruction_mse(model, batches: Iterator[Batch], n: int = 2) -> float:
    """The frozen autoencoder's reconstruction error on a few batches (when it was reused, not trained here)."""
    return float(np.mean([torch.nn.functional.mse_loss(model.autoencoder.decode(model.autoencoder.encode(b.x0)),
                                                       b.x0).item() for b in (next(batches) for _ in range(n))]))


def dataset_batches(uri: str, batch_size: int, shape: tuple[int, int, int], seed: int = 0) -> Iterator[Batch]:
    """Batches of a data set's train split (read and verified in this process); a data set of other clips than
    the model makes is a ValueError naming both shapes."""
    card = open_dataset(ObjectStore(), uri).card
    warn_unacted_audit_flags(uri, card=card)
    found = card_clip_shape(card)
    if found is not None and tuple(found) != tuple(shape):
        raise ValueError(f"the data set {uri} holds {'x'.join(map(str, found))} clips and the model makes "
                         f"{'x'.join(map(str, shape))}: ingest it with --frames/--height/--width of the model, or "
                         "set the model's frames, height and width")
    clips = iter_clips(uri, ReaderConfig(seed=seed, clip_shape=shape))
    while True:
        drawn = [next(clips) for _ in range(batch_size)]
        yield Batch(clips_to_tensor(np.stack([clip for _, clip in drawn])), [caption for caption, _ in drawn])


def reused_autoencoder(ref: str) -> dict:
    """The frame autoencoder's weights from a model reference (e.g. shapes-tiny), to train a new model on."""
    return load_package(resolve_model(ref)).model.autoencoder.state_dict()


def started_weights(ref: str, cfg: TrainConfig) -> dict:
    """The whole model's weights from a model reference, to fine-tune on; its architecture must be the config's."""
    model = load_package(resolve_model(ref)).model
    wanted = cfg.model_config_resolved()
    if model.config != wanted:
        differing = sorted(k for k, v in wanted.model_dump().items() if model.config.model_dump().get(k) != v)
        raise ValueError(f"--start-from {ref}: its architecture differs from preset {cfg.preset!r} in "
                         f"{', '.join(differing)}; train with the preset it was made with (its card names it)")
    return model.state_dict()


def train_to_folder(cfg: TrainConfig, out: str | Path, encoder: TextEncoder | None = None,
                    final_eval_clips: int | None = None, on_step=None, data: str | None = None,
                    autoencoder: str | None = None, start_from: str | None = None) -> dict:
    """Train locally, then write the model folder with its card, metrics CSV, loss curve and contact sheet.

    `data`: a data set URI (`vidgen data prepare` or `ingest`) to train on instead of the built-in world; then
    there is no detector to score prompts with, and the card reports losses and reconstruction error. `autoencoder`:
    a model reference whose frame autoencoder is reused instead of trained. `start_from`: a model reference whose
    weights training starts from (fine-tuning vidgen's own model on one's data), its autoencoder frozen.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = encoder or TextEncoder()
    dtype = autocast_dtype(cfg.precision)
    peak = matmul_flops_per_s(dtype)
    mcfg = cfg.model_config_resolved()
    batches = dataset_batches(data, cfg.batch_size, (mcfg.frames, mcfg.height, mcfg.width), cfg.seed) \
        if data else None
    ae_state = reused_autoencoder(autoencoder) if autoencoder else None
    start = started_weights(start_from, cfg) if start_from else None
    result = train_local(cfg, encoder, on_step, batches, ae_state, None if data else world_evaluation(cfg, encoder),
                         start)
    mfu = result.mfu(cfg.batch_size, peak)
    final, perceptual = {}, None
    if not data:  # prompt accuracy reads clips of the built-in world back: it says nothing of other clips
        pipeline = trained_pipeline(result.model, cfg, encoder)
        clips = final_eval_clips or cfg.eval_clips
        final = evaluate_splits(pipeline, clips).splits
        perceptual = perceptual_eval(pipeline, min(clips, PERCEPTUAL_CLIPS))
    command = invoked_command("train_to_folder()")
    losses = [h["loss"] for h in result.history]
    reconstruction = result.autoencoder_losses[-20:] or [_reconstruction_mse(result.model, batches or synth_batches(
        mcfg, cfg.batch_size, cfg.seed + 1))]
    span = loss_span(losses)
    metrics = {"first_loss": span["first_loss"], "final_loss": span["last_loss"], "loss_window": span["loss_window"],
               "autoencoder_mse": float(np.mean(reconstruction)), "mfu": mfu}
    dataset = data or f"vidgen-builtin-{synth.GENERATOR_VERSION} (generated on the fly)"
    lineage = Lineage(command, cfg.seed, {
        "dataset": dataset, **({"dataset_licences": _licences(data)} if data else {}),
        "training_steps": result.steps, "training_minutes": round(result.minutes, 1),
        "autoencoder_steps": 0 if autoencoder or start_from else cfg.autoencoder_steps,
        **({"autoencoder_from": autoencoder} if autoencoder else {}),
        **({"started_from": start_from} if start_from else {})})
    stage_one = (f"started from the weights of {start_from} (its frame autoencoder frozen)" if start_from
                 else f"the frame autoencoder of {autoencoder} reused" if autoencoder
                 else f"{cfg.autoencoder_steps} autoencoder steps")
    how_made = f"""```
{command}
```
{stage_one}, then {result.steps} transformer steps on {dataset}, in {result.minutes:.1f} training
minutes (evaluation excluded) on {platform.machine()} with {torch.get_num_threads()} torch threads. Model FLOP
utilisation of the transformer steps: {mfu:.3f} (against a 2048x2048 matmul in the same dtype, measured in the
same run)."""
    def card(memorization: dict | None = None) -> str:
        return trained_model_card(result.model, cfg, lineage, metrics, final, how_made, result.evals, perceptual,
                                  memorization)

    save_model(result.model, out, card=card(), extra={"sampler": cfg.sampler.model_dump(),
                                                       "train": cfg.model_dump(mode="json")},
               weights_dtype=getattr(torch, cfg.save_dtype))
    write_metrics_csv(result.history, out / "metrics.csv")
    evals = {"during": result.evals, "final": final, "perceptual": perceptual}
    (out / "evals.json").write_text(json.dumps(evals, indent=2) + "\n")
    loss_curve_png(result.history, out / "loss_curve.png", result.evals)
    write_sums(out)  # `generate` verifies the folder, which lists every file
    if data and cfg.memorization_clips:  # the saved model renders: what a user of the folder would get
        evals["memorization"] = memorization_report(str(out), data, cfg.memorization_clips, cfg.seed)
        (out / CARD_FILE).write_text(card(evals["memorization"]))
        (out / "evals.json").write_text(json.dumps(evals, indent=2) + "\n")
        write_sums(out)
    prompts = next(batches).captions[:len(SAMPLE_PROMPTS)] if data else list(SAMPLE_PROMPTS)
    samples = generate(out, prompts, seeds=list(range(len(prompts))), encoder=encoder)
    contact_sheet_png(samples.frames, prompts, out / "samples.png")
    write_sums(out)  # again, with samples.png
    return {"out": str(out), "steps": result.steps, "minutes": result.minutes, "final": final, "mfu": mfu,
            "autoencoder_mse": metrics["autoencoder_mse"],  # the card's numbers, so console and card agree
            "first_loss": metrics["first_loss"], "last_loss": metrics["final_loss"], "loss_window": span["loss_window"],
            "memorization": evals.get("memorization")}


def _licences(uri: str) -> dict[str, int]:
    dataset = open_dataset(ObjectStore(), uri)
    return dataset_licences(dataset.card, dataset.index.num_samples)
