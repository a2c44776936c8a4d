"""Prompt accuracy of a model on the built-in world: new seeds of seen compositions, held-out compositions, and
paraphrased prompts. One set of split names for every card, log and report: `seen`, `heldout`, `paraphrase`."""

from __future__ import annotations

import numpy as np
import torch

from vidgen import synth
from vidgen.diffusion import SamplerConfig, sample
from vidgen.metrics import PromptAccuracy, prompt_accuracy
from vidgen.model import ModelConfig
from vidgen.text import TextEncoder

# split name -> (the world's split the compositions come from, paraphrased caption templates)
SPLITS = {"seen": ("train", False), "heldout": ("heldout", False), "paraphrase": ("train", True)}


def eval_specs(cfg: ModelConfig, split: str, n: int, seed: int, paraphrase: bool = False) -> list[synth.ClipSpec]:
    """Evaluation prompts from their own seed stream, apart from the training stream, so the clips are new."""
    return synth.sample_specs(n, 10_000_000 + seed, split, cfg.frames, cfg.height, cfg.width, paraphrase)


def generate_for(model, encoder: TextEncoder, specs: list[synth.ClipSpec], sampler: SamplerConfig,
                 dtype: torch.dtype | None = None, batch_size: int = 48) -> np.ndarray:
    """One clip per spec's caption, seeded by the spec: uint8 (N, T, H, W, 3)."""
    model.eval()
    clips = []
    for i in range(0, len(specs), batch_size):
        chunk = specs[i: i + batch_size]
        text = encoder.encode([s.caption for s in chunk])
        seeds = [int(s.background_seed) for s in chunk]
        clips.append(sample(model, text, seeds, sampler.steps, sampler.guidance, dtype).frames)
    return np.concatenate(clips)


def evaluate(model, encoder: TextEncoder, specs: list[synth.ClipSpec], sampler: SamplerConfig,
             dtype: torch.dtype | None = None, batch_size: int = 48) -> PromptAccuracy:
    """Generate one clip per spec's caption and score it against the spec's ground truth."""
    clips = generate_for(model, encoder, specs, sampler, dtype, batch_size)
    return prompt_accuracy(clips, [s.composition for s in specs])


def evaluate_splits(model, encoder: TextEncoder, sampler: SamplerConfig, clips: int, seed: int = 0,
                    dtype: torch.dtype | None = None, splits: tuple[str, ...] = tuple(SPLITS)) -> dict[str, dict]:
    """{split: accuracy as a dict} for each named split, `clips` clips each."""
    result = {}
    for name in splits:
        world_split, paraphrase = SPLITS[name]
        specs = eval_specs(model.config, world_split, clips, seed, paraphrase)
        result[name] = evaluate(model, encoder, specs, sampler, dtype).to_dict()
    return result
