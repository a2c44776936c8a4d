"""Evaluation runs of a model by reference: prompt accuracy on the built-in world (`vidgen eval`, `vidgen demo`)."""

from __future__ import annotations

from vidgen import synth
from vidgen.diffusion import SamplerConfig
from vidgen.evaluation import evaluate_splits
from vidgen.metrics import PromptAccuracy, prompt_accuracy
from vidgen.runtime.pipeline import Generated, VideoPipeline

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


def evaluate_model(model_ref: str | None, clips: int = 96, seed: int = 0, steps: int | None = None,
                   guidance: float | None = None) -> dict:
    """Prompt accuracy of a saved model on seen, held-out and paraphrased prompts."""
    pipeline = VideoPipeline.from_reference(model_ref)
    caps = pipeline.capabilities.with_defaults(steps, guidance)
    sampler = SamplerConfig(steps=caps.steps, guidance=caps.guidance)
    result = evaluate_splits(pipeline.model, pipeline.encoder, sampler, clips, seed, pipeline.dtype)
    return {"model": str(pipeline.folder), "clips_per_split": clips, "sampler": sampler.model_dump(), **result}


def accuracy_of(generated: Generated, prompts: list[str]) -> PromptAccuracy | None:
    """Score generated clips against prompts that name a colour, shape and direction of the world, if all do."""
    truths = [synth.parse_caption(p) for p in prompts]
    if any(t is None for t in truths):
        return None
    return prompt_accuracy(generated.frames, truths)
