"""Prompt drift: the encoder-only OOD score separates the built-in world's prompts (held-out compositions and
paraphrases, never in the reference set) from prompts about anything else, including ones that share its words."""

import torch
from torchmetrics.functional.classification import binary_auroc

from benchmarks.drift import UNRELATED
from vidgen import synth
from vidgen.drift import PromptDrift, world_prompt_drift


def test_the_score_separates_the_world_from_other_prompts(encoder):
    drift = world_prompt_drift(encoder, references=384, calibration=192)
    inside = [s.caption for s in synth.sample_specs(96, 77, "heldout", 8, 32, 32)]
    inside += [s.caption for s in synth.sample_specs(96, 78, "train", 8, 32, 32, paraphrase=True)]
    scores_in = drift.score(encoder.encode(inside).pooled)
    scores_out = drift.score(encoder.encode(UNRELATED).pooled)
    labels = torch.cat([torch.zeros(len(scores_in)), torch.ones(len(scores_out))]).int()
    assert float(binary_auroc(torch.cat([scores_in, scores_out]), labels)) >= 0.9
    assert float(drift.out_of_distribution(encoder.encode(inside).pooled).float().mean()) <= 0.1  # calibrated at 95%
    assert float(drift.out_of_distribution(encoder.encode(UNRELATED).pooled).float().mean()) >= 0.8


def test_scores_are_one_minus_the_nearest_similarities():
    reference = torch.eye(3)
    drift = PromptDrift(reference, k=1)
    scores = drift.score(torch.tensor([[1.0, 0, 0], [0, 0, -2.0]]))
    assert torch.allclose(scores, torch.tensor([0.0, 1.0]))  # a reference itself: 0; orthogonal to all but -1: 1
    assert drift.calibrate(torch.tensor([[1.0, 0.1, 0], [0, 1.0, 0]]), quantile=1.0) > 0
