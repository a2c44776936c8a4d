"""Evaluation runs: prompt accuracy and perceptual metrics of a model on the built-in world, and `vidgen eval` /
`vidgen demo` of a model by reference (for a diffusers model, which was not trained on that world, what applies:
the time a clip takes, and with a data set its quality on that data set's held-out clips, `evaluate_held_out`).

Every evaluation generates through a `VideoPipeline`, the one path bulk render and serving take: a model by
reference comes from `load_pipeline`, a model a run holds in memory from `VidgenPipeline.from_model`. Seconds per
clip are the sampler's own (`GenerationOutput.timings["sample_s"]`), not re-timed here.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from pydantic import ValidationError

from storage.latent_shards import dataset_digest
from storage.objectstore import ObjectStore
from vidgen import synth
from vidgen.clip_request import Capabilities, ClipRequest, ResolvedClip, problems_of, resolve_clip
from vidgen.diffusion import GenerationOutput
from vidgen.evaluation import SPLITS, eval_specs, score
from vidgen.metrics import PromptAccuracy, prompt_accuracy, psnr, ssim
from vidgen.perceptual import perceptual_report
from vidgen.pipelines.base import ModelInfo, VideoPipeline
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions
from vidgen.runs.cards import trained_on_builtin_world
from vidgen.runs.feature_nets import efficientnet_lite0, video_feature_net, video_feature_net_version
from vidgen.runs.generate import Generated

EVAL_BATCH = 48  # clips an evaluation samples together; the numbers every card reports were measured at this
PERCEPTUAL_CLIPS = 48  # clips of seen prompts a model card's perceptual metrics are measured on (at most)
SAMPLE_PROMPTS = (
    "a red square moving right",
    "a green circle moving down",
    "a blue triangle moving left",
    "a yellow square moving up",
    "a magenta circle moving left",
    "a cyan triangle moving right",
    "a red circle moving left",  # held-out composition
    "a blue triangle moving right",  # held-out composition
)


class EvaluationError(ValueError):
    """An evaluation that failed inside the model's own code (a diffusers pipeline refusing or crashing), in one
    line naming the model and the error."""


@dataclass(frozen=True)
class SplitScores:
    """Prompt accuracy of each evaluated split ({split: PromptAccuracy as a dict}) and the sampler's seconds per
    clip over all of them."""

    splits: dict[str, dict]
    seconds_per_clip: float


def sampler_settings(caps: Capabilities) -> dict:
    """The sampler settings an evaluation ran at, as reports and cards name them."""
    return {"steps": caps.steps, "guidance": caps.guidance}


def _clip(prompt: str, seed: int, caps: Capabilities) -> ResolvedClip:
    clip, _ = resolve_clip(ClipRequest(prompt=prompt, seed=seed), caps)  # a prompt and a seed: nothing to refuse
    return clip


# called with the number of clips a batch just made, so a caller can show an evaluation's progress
ClipsDone = Callable[[int], None]


def generate_in_batches(pipeline: VideoPipeline, clips: list[ResolvedClip], batch_size: int = EVAL_BATCH,
                        on_clips: ClipsDone | None = None) -> GenerationOutput:
    """Every clip through `pipeline.generate`, `batch_size` at a time: the frames in order, their seeds, and the
    sampling time of all batches together (`timings["sample_s"]`)."""
    outputs = []
    for i in range(0, len(clips), batch_size):
        outputs.append(pipeline.generate(clips[i:i + batch_size]))
        if on_clips:
            on_clips(len(outputs[-1].seeds))
    return GenerationOutput(np.concatenate([o.frames for o in outputs]), [s for o in outputs for s in o.seeds],
                            {"sample_s": sum(o.timings["sample_s"] for o in outputs)})


def generate_specs(pipeline: VideoPipeline, specs: list[synth.ClipSpec], caps: Capabilities | None = None,
                   on_clips: ClipsDone | None = None) -> GenerationOutput:
    """One clip per spec's caption, seeded by the spec, at the settings of `caps` (default: the pipeline's)."""
    caps = caps or pipeline.capabilities
    return generate_in_batches(pipeline, [_clip(s.caption, s.background_seed, caps) for s in specs],
                               on_clips=on_clips)


def evaluate_splits(pipeline: VideoPipeline, clips: int, seed: int = 0, splits: tuple[str, ...] = tuple(SPLITS),
                    caps: Capabilities | None = None, on_clips: ClipsDone | None = None) -> SplitScores:
    """Prompt accuracy of `clips` clips of each named split, at the settings of `caps` (default: the pipeline's)."""
    caps = caps or pipeline.capabilities
    accuracy, seconds = {}, 0.0
    for name in splits:
        specs = eval_specs(caps.shape, name, clips, seed)
        generated = generate_specs(pipeline, specs, caps, on_clips)
        accuracy[name] = score(generated.frames, specs).to_dict()
        seconds += generated.timings["sample_s"]
    return SplitScores(accuracy, seconds / (clips * len(splits)))


def perceptual_eval(pipeline: VideoPipeline, clips: int, seed: int = 0, caps: Capabilities | None = None,
                    on_clips: ClipsDone | None = None) -> dict:
    """Perceptual metrics (`vidgen.perceptual`) of a vidgen model's clips of seen compositions against the world's
    own clips of the same prompts (the ground truth the prompts describe), with the feature net's version."""
    caps = caps or pipeline.capabilities
    specs = eval_specs(caps.shape, "seen", clips, seed)
    generated, reference = generate_specs(pipeline, specs, caps, on_clips).frames, synth.render_batch(specs)
    report = perceptual_report(generated, reference, efficientnet_lite0(), video_feature_net())
    # pixel metrics against the world's clip of the same spec, for comparison: they punish any other placement
    return {**report, "psnr": psnr(generated, reference), "ssim": ssim(generated, reference),
            "video_features": video_feature_net_version(), "frame_features": "efficientnet-lite0"}


def measures_quality(model: ModelInfo) -> bool:
    """Whether an evaluation scores this model's quality (prompt accuracy on the built-in world), not only its
    speed: a vidgen model's, unless its card names a data set other than the built-in world (a model of one's own
    videos); a diffusers model was not trained on that world."""
    return model.backend == "vidgen" and trained_on_builtin_world(model.folder)


def evaluate_model(model_ref: str | None, clips: int = 96, seed: int = 0, steps: int | None = None,
                   guidance: float | None = None, frames: int | None = None, height: int | None = None,
                   width: int | None = None, batch_size: int = 8, perceptual_clips: int = 0,
                   progress: Callable[[int, int], None] | None = None, options: PipelineOptions | None = None) -> dict:
    """A vidgen model of the built-in world: prompt accuracy on seen, held-out and paraphrased prompts, and with
    `perceptual_clips` the perceptual metrics of that many clips of seen prompts. Any other model (`measures_quality`):
    seconds per clip over `clips` clips of the world's prompts, in batches of `batch_size` (`frames`, `height`,
    `width`: the clip to time; default the model's). `progress(done, total)` after each batch of clips. `options`:
    how the model loads (an adapter in `lora`, applied once)."""
    pipeline = load_pipeline(model_ref, options=options)
    caps = pipeline.capabilities.with_defaults(steps, guidance, frames, height, width)
    facts = {"model": pipeline.label, "folder": str(pipeline.folder), "backend": pipeline.backend,
             "pipeline_class": pipeline.pipeline_class, "sampler": sampler_settings(caps)}
    quality = measures_quality(ModelInfo(pipeline.folder, pipeline.backend, pipeline.pipeline_class, pipeline.label,
                                         caps))
    on_clips = _counter(clips * (len(SPLITS) if quality else 1) + (perceptual_clips if quality else 0), progress)
    if quality:
        scores = evaluate_splits(pipeline, clips, seed, caps=caps, on_clips=on_clips)
        result = {**facts, "clips_per_split": clips, "seconds_per_clip": scores.seconds_per_clip, **scores.splits}
        if perceptual_clips:
            result["perceptual"] = perceptual_eval(pipeline, perceptual_clips, seed, caps, on_clips)
        return result
    specs = eval_specs(caps.shape, "seen", clips, seed)
    generated = generate_in_batches(pipeline, [_clip(s.caption, seed + i, caps) for i, s in enumerate(specs)],
                                    batch_size, on_clips)
    return {**facts, "clips": clips, "clip_shape": list(caps.shape),
            "seconds_per_clip": generated.timings["sample_s"] / clips,
            "applies": "timings only: prompt accuracy scores the built-in world, which this model was not trained on"}


def evaluate_held_out(model_ref: str | None, data_uri: str, clips: int = 32, seed: int = 0, steps: int | None = None,
                      frames: int | None = None, height: int | None = None, width: int | None = None,
                      options: PipelineOptions | None = None, frame_network: torch.nn.Module | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict:
    """A diffusers model (an adapter in `options.lora` fused in once, refused unless trained on it) on the first
    `clips` clips of the data set's eval split (`vidgen.runs.held_out_quality`): validation loss, FD of frames to the
    clips, temporal consistency, at the same noise and seeds for every model given the same arguments. Clips are
    fitted to the nearest shape the model makes, at most `frames`, `height`, `width` where given (a smaller clip
    costs less). `progress(done, total)` after each batch
    (every clip counts twice: encoded, rendered). A failure inside the model's code is an EvaluationError."""
    from vidgen.runs.held_out_quality import held_out_clips, held_out_quality  # imports diffusers: seconds

    store = ObjectStore()
    held_out = held_out_clips(data_uri, clips, store)
    pipeline = load_pipeline(model_ref, options=options)
    if pipeline.backend != "diffusers":
        raise ValueError(f"--data: held-out measures need a diffusers pipeline (its own VAE and text encoder encode "
                         f"the clips); {pipeline.label} is a {pipeline.backend} model, judged on the built-in world: "
                         "leave out --data")
    try:
        quality = held_out_quality(pipeline, held_out, frame_network or efficientnet_lite0(), seed, steps,
                                   _size_cap(frames, height, width), _counter(2 * len(held_out), progress))
    except (RuntimeError, ValueError) as e:
        detail = "; ".join(problems_of(e)) if isinstance(e, ValidationError) else str(e).strip().partition("\n")[0]
        raise EvaluationError(f"evaluating {pipeline.label} on the held-out clips of {data_uri} failed: "
                              f"{type(e).__name__}: {detail}") from e
    return {"model": pipeline.label, "backend": pipeline.backend, "pipeline_class": pipeline.pipeline_class,
            "data": data_uri, "data_digest": dataset_digest(store, data_uri), "seed": seed, **quality}


def _size_cap(frames: int | None, height: int | None, width: int | None) -> tuple[int, int, int] | None:
    """The (frames, height, width) held-out clips are capped at; None when no size was given."""
    sizes = (frames, height, width)
    if all(n is None for n in sizes):
        return None
    return tuple(sys.maxsize if n is None else n for n in sizes)


def _counter(total: int, progress: Callable[[int, int], None] | None) -> ClipsDone | None:
    """A ClipsDone that reports the running count of clips out of `total` to `progress`."""
    if progress is None:
        return None
    done = 0

    def count(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return count


def accuracy_of(generated: Generated, prompts: list[str]) -> PromptAccuracy | None:
    """Score generated clips against prompts that name a colour, shape and direction of the world, if all do."""
    truths = [synth.parse_caption(p) for p in prompts]
    if any(t is None for t in truths):
        return None
    return prompt_accuracy(generated.frames, truths)
