"""Evaluation runs of a model by reference (`vidgen eval`, `vidgen demo`): prompt accuracy on the built-in world for
vidgen models; for a diffusers model, which was not trained on that world, what applies: the time a clip takes."""

from __future__ import annotations

import time

from vidgen import synth
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.diffusion import SamplerConfig
from vidgen.evaluation import eval_specs, evaluate_splits, generate_for
from vidgen.metrics import PromptAccuracy, prompt_accuracy, psnr, ssim
from vidgen.perceptual import perceptual_report
from vidgen.pipelines.load import load_pipeline
from vidgen.runs.feature_nets import efficientnet_lite0, video_feature_net, video_feature_net_version
from vidgen.runs.generate import Generated

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


def perceptual_eval(model, encoder, sampler: SamplerConfig, clips: int, seed: int = 0, dtype=None) -> dict:
    """Perceptual metrics (`vidgen.perceptual`) of a vidgen model's clips of seen compositions against the world's
    own clips of the same prompts (the ground truth the prompts describe), with the feature net's version."""
    specs = eval_specs(model.config, "train", clips, seed)
    generated, reference = generate_for(model, encoder, specs, sampler, dtype), synth.render_batch(specs)
    report = perceptual_report(generated, reference, efficientnet_lite0(), video_feature_net())
    # pixel metrics against the world's clip of the same spec, for comparison: they punish any other placement
    return {**report, "psnr": psnr(generated, reference), "ssim": ssim(generated, reference),
            "video_features": video_feature_net_version(), "frame_features": "efficientnet-lite0"}


def evaluate_model(model_ref: str | None, clips: int = 96, seed: int = 0, steps: int | None = None,
                   guidance: float | None = None, frames: int | None = None, height: int | None = None,
                   width: int | None = None, batch_size: int = 8, perceptual_clips: int = 0) -> dict:
    """A vidgen model: prompt accuracy on seen, held-out and paraphrased prompts, and with `perceptual_clips` the
    perceptual metrics of that many clips of seen prompts. A diffusers model: seconds per clip over `clips` clips
    of the world's prompts, in batches of `batch_size` (`frames`, `height`, `width`: the clip to time; default
    the model's)."""
    pipeline = load_pipeline(model_ref)
    caps = pipeline.capabilities.with_defaults(steps, guidance, frames, height, width)
    sampler = SamplerConfig(steps=caps.steps, guidance=caps.guidance)
    facts = {"model": pipeline.label, "folder": str(pipeline.folder), "backend": pipeline.backend,
             "pipeline_class": pipeline.pipeline_class, "sampler": sampler.model_dump()}
    if pipeline.backend == "vidgen":
        started = time.perf_counter()
        result = evaluate_splits(pipeline.model, pipeline.encoder, sampler, clips, seed, pipeline.dtype)
        seconds = (time.perf_counter() - started) / (clips * len(result))
        if perceptual_clips:
            result["perceptual"] = perceptual_eval(pipeline.model, pipeline.encoder, sampler, perceptual_clips, seed,
                                                   pipeline.dtype)
        return {**facts, "clips_per_split": clips, "seconds_per_clip": seconds, **result}
    specs = synth.sample_specs(clips, 10_000_000 + seed, "train", *caps.shape)
    requests = [resolve_clip(ClipRequest(prompt=s.caption, seed=seed + i), caps)[0] for i, s in enumerate(specs)]
    started = time.perf_counter()
    for i in range(0, len(requests), batch_size):
        pipeline.generate(requests[i:i + batch_size])
    seconds = time.perf_counter() - started
    return {**facts, "clips": clips, "clip_shape": list(caps.shape), "seconds_per_clip": seconds / clips,
            "applies": "timings only: prompt accuracy scores the built-in world, which this model was not trained on"}


def accuracy_of(generated: Generated, prompts: list[str]) -> PromptAccuracy | None:
    """Score generated clips against prompts that name a colour, shape and direction of the world, if all do."""
    truths = [synth.parse_caption(p) for p in prompts]
    if any(t is None for t in truths):
        return None
    return prompt_accuracy(generated.frames, truths)
