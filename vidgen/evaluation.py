"""Prompt accuracy of a model on the built-in world: new seeds of seen compositions, held-out compositions, and
paraphrased prompts. One set of split names for every card, log and report: `seen`, `heldout`, `paraphrase`.

What is pure lives here: which prompts and seeds each split holds, and how clips are scored against them. Making
the clips is the run layer's (`vidgen.runs.eval_runs`), through a `VideoPipeline` like every other generation.
"""

from __future__ import annotations

import numpy as np

from vidgen import synth
from vidgen.metrics import PromptAccuracy, prompt_accuracy

# split name -> (the world's split the compositions come from, paraphrased caption templates)
SPLITS = {"seen": ("train", False), "heldout": ("heldout", False), "paraphrase": ("train", True)}
EVAL_SEED_STREAM = 10_000_000  # evaluation prompts are drawn from seeds apart from the training stream


def eval_specs(shape: tuple[int, int, int], split: str, n: int, seed: int) -> list[synth.ClipSpec]:
    """n evaluation prompts of a named split (`SPLITS`) for (frames, height, width) clips, from their own seed stream
    so the clips are new; the same (split, n, seed) gives the same prompts and seeds every time."""
    world_split, paraphrase = SPLITS[split]
    return synth.sample_specs(n, EVAL_SEED_STREAM + seed, world_split, *shape, paraphrase)


def score(clips: np.ndarray, specs: list[synth.ClipSpec]) -> PromptAccuracy:
    """How many of the clips (uint8 (N, T, H, W, 3), one per spec) show what their spec's caption says."""
    return prompt_accuracy(clips, [s.composition for s in specs])
