"""What a training run leaves beside its weights: the card of a trained model (one set of metric names for local
and distributed runs alike, written through `storage.cards.model_card` like every model card) and metrics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from storage.cards import CardError, Lineage, model_card, parse_card
from storage.package import CARD_FILE
from vidgen import synth
from vidgen.model import VideoDiT
from vidgen.training import TrainConfig

PERCEPTUAL_KEYS = ("fd_frames", "kid_frames", "fvd_vidgen", "kvd_vidgen", "subject_consistency", "flicker")
BUILTIN_WORLD_LICENCE = "apache-2.0"  # the built-in world is vidgen's own code, and so are models of it
LOSS_WINDOW = 10  # steps averaged for a run's first and last loss: one step's flow-matching loss is noisy


def loss_span(losses: list[float]) -> dict:
    """A run's first and last loss as its card and its console both report them: the means over its first and its
    last LOSS_WINDOW steps (half of the steps each in a shorter run, so the two never share a step)."""
    window = max(1, min(LOSS_WINDOW, len(losses) // 2))
    return {"first_loss": float(np.mean(losses[:window])), "last_loss": float(np.mean(losses[-window:])),
            "loss_window": window}


def loss_span_text(first: float, last: float, window: int) -> str:
    """The words card and console use for `loss_span`, so a reader sees one number under one name."""
    return f"loss {first:.4f} -> {last:.4f} (means of the first and of the last {window} steps)"


def dataset_licences(dataset_card: dict, samples: int) -> dict[str, int]:
    """{licence: clips} of a data set, from its card: an ingested set counts its clips per licence (`licences`);
    a prepared one names one `license` for all `samples`."""
    counts = dataset_card.get("licences")
    if isinstance(counts, dict) and counts:
        return {str(k): int(v) for k, v in counts.items()}
    return {str(dataset_card.get("license", "unknown")): samples}


def model_licence(licences: dict[str, int] | None) -> str:
    """The `license` of a model card: the built-in world's (None: trained on it), the one licence of all its
    training clips, or `other` when they differ (the card's text then names each)."""
    if not licences:
        return BUILTIN_WORLD_LICENCE
    return next(iter(licences)) if len(licences) == 1 else "other"


def _licence_sentence(licences: dict[str, int]) -> str:
    listed = ", ".join(f"{name} ({n} clips)" for name, n in sorted(licences.items()))
    if len(licences) == 1:
        return f"Every training clip is licensed {listed}; the model's card says so."
    return (f"The training clips' licences differ: {listed}. The card's `license: other` stands for all of them: each "
            "binds what this model may be used for.")


def perceptual_section(p: dict) -> str:
    """The card's table of perceptual metrics against the world's own clips of the same prompts."""
    return f"""
## Perceptual metrics ({p['clips']} clips of seen prompts against the world's own clips of the same prompts)
FD and KID of efficientnet-lite0 frame features, FVD-vidgen and KVD-vidgen in the space of {p['video_features']}
(lower is closer; `vidgen.perceptual`); subject consistency and flicker score after VBench (1 is steadiest).

| FD-frames | KID-frames | FVD-vidgen | KVD-vidgen | subject consistency (world) | flicker (world) |
|---|---|---|---|---|---|
| {p['fd_frames']:.1f} | {p['kid_frames']:.4f} | {p['fvd_vidgen']:.2f} | {p['kvd_vidgen']:.4f} | \
{p['subject_consistency']:.3f} ({p['subject_consistency_reference']:.3f}) | {p['flicker']:.3f} \
({p['flicker_reference']:.3f}) |
"""


def trained_model_card(model: VideoDiT, train: TrainConfig, lineage: Lineage, metrics: dict,
                       accuracy: dict[str, dict], how_made: str, during: list[dict] = (),
                       perceptual: dict | None = None, memorization: dict | None = None) -> str:
    """The card of a trained model: a YAML header (metrics, the training config, the lineage with its `dataset`)
    and a Markdown body.

    `metrics` holds the run's own numbers (first_loss, final_loss, autoencoder_mse, mfu); the prompt accuracy of
    each evaluated split is added as `prompt_accuracy_<split>` (`vidgen.evaluation.SPLITS` names them), and the
    perceptual metrics (`vidgen.runs.eval_runs.perceptual_eval`) under their own names when given, and the
    memorization check (`vidgen.runs.memorization.memorization_report`) of a model trained on a data set.
    """
    cfg = model.config
    meta = {
        "pipeline_tag": "text-to-video",
        "library_name": "vidgen",
        "license": model_licence(lineage.source.get("dataset_licences")),
        "datasets": [lineage.source["dataset"]],
        "model_preset": train.preset,
        "params": model.num_params(),
        "metrics": {**{k: round(v, 5) for k, v in metrics.items()},
                    **{f"prompt_accuracy_{split}": round(acc["all_three"], 3) for split, acc in accuracy.items()},
                    **{k: round(perceptual[k], 4) for k in PERCEPTUAL_KEYS if perceptual},
                    **({f"memorization_extracted_share_{kind}": memorization[kind]["extracted_share"]
                        for kind in ("training_captions", "heldout_prompts")} if memorization else {})},
        "train_config": train.model_dump(mode="json"),
    }
    rows = "\n".join(f"| {split} | {m['colour']:.2f} | {m['shape']:.2f} | {m['direction']:.2f} | "
                     f"{m['all_three']:.2f} |" for split, m in accuracy.items())
    curve = ""
    if during:
        curve = "\nDuring training:\n\n| minutes | step | seen | held-out |\n|---|---|---|---|\n" + "\n".join(
            f"| {e['minutes']:.1f} | {e['step']} | {e['seen']['all_three']:.2f} | {e['heldout']['all_three']:.2f} |"
            for e in during) + "\n"
    if not accuracy:  # trained on a data set: no detector reads its clips back
        body = f"""# vidgen {train.preset} model

A text-to-video diffusion transformer ({model.num_params() / 1e6:.2f}M parameters) making
{cfg.frames}x{cfg.height}x{cfg.width} clips, trained on `{lineage.source['dataset']}` (its dataset card names the
sources and licences of the clips: they bind what this model may be used for).
{_licence_sentence(lineage.source.get("dataset_licences") or {"unknown": 0})}

## How it was made
{how_made.strip()}

Git commit {lineage.git_commit}, seed {lineage.seed}.

## Measured
Flow-matching {loss_span_text(metrics['first_loss'], metrics['final_loss'], metrics.get('loss_window', 10))}; frame
autoencoder reconstruction MSE {metrics['autoencoder_mse']:.5f} (pixels in [-1, 1]). Prompt accuracy is not
reported: it reads clips of the built-in world back, and this model learnt other clips.
{memorization_section(memorization) if memorization else ""}"""
        return model_card(meta, lineage, body)
    body = f"""# vidgen {train.preset} model

A text-to-video diffusion transformer ({model.num_params() / 1e6:.2f}M parameters) making
{cfg.frames}x{cfg.height}x{cfg.width} clips of the built-in world (`vidgen/synth.py`, {synth.GENERATOR_VERSION}):
one of 6 colours x 3 shapes x 4 directions. The compositions in `vidgen.synth.HELD_OUT` were never seen in training.

## How it was made
{how_made.strip()}

Git commit {lineage.git_commit}, seed {lineage.seed}.

## Prompt accuracy (all three of colour, shape and direction read back by `vidgen.metrics.detect`)
{train.eval_clips} clips per split, {train.sampler.steps} Euler steps, guidance {train.sampler.guidance}:

| split | colour | shape | direction | all three |
|---|---|---|---|---|
{rows}
{curve}{perceptual_section(perceptual) if perceptual else ""}
## Limits
It knows only the built-in world: a prompt about anything else gives a coloured shape anyway.
"""
    return model_card(meta, lineage, body)


def memorization_section(report: dict) -> str:
    """The card's privacy section: does the model regurgitate its training clips (`memorization_report`)?"""
    train, heldout = report["training_captions"], report["heldout_prompts"]
    verdict = ("**It memorizes its training clips**: do not publish it where its training clips may not be shown"
               if report["memorizes"] else "No sign of memorization")
    return f"""
## Memorization (privacy)
The {report["method"]}, against the {report['training_clips']} training clips of `{report['data']}`: a generation
counts as extracted when its perceptual hash is within {report['extraction_bits']} of {report['bits']} bits of a
training clip's (a re-encoded copy is within {report['near_bits']}).

| prompts | clips | extracted | near-duplicate | median hash bits | median feature distance / training spacing |
|---|---|---|---|---|---|
{_memorization_row("training captions", train)}
{_memorization_row("held-out prompts", heldout)}

{verdict} (flagged above {report['threshold_share']:.0%} extracted on training captions). Per-generation nearest
training clips are in evals.json; rerun with `vidgen eval --model MODEL --memorization {report['data']}`.
"""


def _memorization_row(label: str, kind: dict) -> str:
    return (f"| {label} | {kind['clips']} | {kind['extracted_share']:.2f} | {kind['near_duplicate_share']:.2f} | "
            f"{kind['median_phash_bits']:.0f} | {kind['median_feature_ratio']:.2f} |")


def trained_on_builtin_world(folder: Path) -> bool:
    """False when a model's card names a data set other than the built-in world's (`vidgen-builtin-...`) in its
    `datasets`: a model of one's own videos, which neither prompt accuracy nor the world's detector can read. A card
    that names none is taken as the built-in world's, as vidgen trains on it by default."""
    try:
        meta, _ = parse_card((Path(folder) / CARD_FILE).read_text(), CARD_FILE)
    except (OSError, CardError, UnicodeDecodeError):
        return True
    return all(str(d).startswith(f"vidgen-builtin-{synth.GENERATOR_VERSION}") for d in meta.get("datasets") or [])


def write_metrics_csv(history: list[dict], path: str | Path) -> Path:
    """One row per optimizer step; the columns of every record, in the order they first appear (a column only some
    steps have, such as a validation loss, is empty in the others)."""
    path = Path(path)
    columns = list(dict.fromkeys(name for record in history for name in record))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)
    return path
