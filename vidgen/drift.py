"""Prompt drift: how far a prompt is from what a model was trained on, from the text encoder alone.

The score of a prompt is 1 minus the mean cosine similarity of its pooled embedding to its `k` nearest reference
embeddings (the training captions): near 0 for prompts like the training ones, towards 1 for unrelated ones. The
threshold is calibrated on held-out in-distribution prompts (a quantile of their scores), so "out of distribution"
means "further than (say) 95% of prompts the model does know". Only embeddings of the reference set are kept; a
monitor keeps counts and scores, never a prompt.
"""

from __future__ import annotations

import torch

from vidgen import synth
from vidgen.text import TextEncoder


class PromptDrift:
    """Scores prompts against a reference set of in-distribution embeddings (unit vectors, (N, D))."""

    def __init__(self, reference: torch.Tensor, k: int = 5, threshold: float = 1.0):
        self.reference = torch.nn.functional.normalize(reference.float(), dim=1)
        self.k, self.threshold = min(k, len(reference)), threshold

    def score(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B,) out-of-distribution scores of pooled prompt embeddings (B, D)."""
        similarity = torch.nn.functional.normalize(pooled.float(), dim=1) @ self.reference.T
        return 1 - similarity.topk(self.k, dim=1).values.mean(dim=1)

    def calibrate(self, pooled: torch.Tensor, quantile: float = 0.95) -> float:
        """Set the threshold at this quantile of held-out in-distribution prompts' scores; returns it."""
        self.threshold = float(torch.quantile(self.score(pooled), quantile))
        return self.threshold

    def out_of_distribution(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.score(pooled) > self.threshold


def world_prompt_drift(encoder: TextEncoder, references: int = 512, calibration: int = 256, seed: int = 0,
                       frames: int = 8, height: int = 32, width: int = 32) -> PromptDrift:
    """A PromptDrift for models of the built-in world: training captions as the reference, new seeds of the same
    compositions and held-out paraphrase templates to calibrate on."""
    train = [s.caption for s in synth.sample_specs(references, seed, "train", frames, height, width)]
    held = [s.caption for s in synth.sample_specs(calibration, seed + 1, "train", frames, height, width,
                                                  paraphrase=True)]
    drift = PromptDrift(encoder.encode(train).pooled)
    drift.calibrate(encoder.encode(held).pooled)
    return drift


def drift_to_bytes(drift: PromptDrift) -> bytes:
    """The reference set, k and threshold as safetensors (no pickle: a stored reference is data, never code)."""
    from safetensors.torch import save

    return save({"reference": drift.reference.contiguous(), "k": torch.tensor([drift.k]),
                 "threshold": torch.tensor([drift.threshold], dtype=torch.float64)})


def drift_from_bytes(data: bytes) -> PromptDrift:
    """The PromptDrift `drift_to_bytes` stored."""
    from safetensors.torch import load

    tensors = load(data)
    return PromptDrift(tensors["reference"], k=int(tensors["k"][0]), threshold=float(tensors["threshold"][0]))
