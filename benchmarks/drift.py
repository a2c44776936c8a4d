"""Prompt drift (issue: model lifecycle): how well `vidgen.drift`'s score separates the built-in world's prompts that
were never in its reference set (held-out compositions, paraphrases) from prompts about anything else, as ROC AUC,
and the out-of-distribution share of each at the calibrated threshold. The test (tests/vidgen/test_drift.py)
requires AUC >= 0.9 on the same prompts.

    python benchmarks/drift.py
"""

from __future__ import annotations

import torch
from torchmetrics.functional.classification import binary_auroc

from vidgen import synth
from vidgen.drift import world_prompt_drift
from vidgen.text import TextEncoder

# prompts about anything but the built-in world (the test's negatives too)
UNRELATED = [
    "a cat sleeping on a sofa", "a busy street in tokyo at night", "waves crashing on a rocky beach",
    "a chef chopping onions in a kitchen", "a dog running through a park", "fireworks over a city skyline",
    "a man playing guitar on a stage", "a timelapse of clouds over mountains", "a car driving through the desert",
    "children playing football in the rain", "an astronaut floating in space", "a horse galloping across a field",
    # sharing the world's words: colours, directions, shapes of other things
    "a red car moving left on a highway", "a blue whale swimming up to the surface", "a green tractor in a field",
    "a yellow school bus driving right", "a man in a square hat walking down the road", "a circle of friends laughing",
    "the triangle player of an orchestra", "a magenta sunset over the sea moving slowly",
]


def main() -> None:
    encoder = TextEncoder()
    drift = world_prompt_drift(encoder, references=384, calibration=192)
    inside = [s.caption for s in synth.sample_specs(96, 77, "heldout", 8, 32, 32)]
    inside += [s.caption for s in synth.sample_specs(96, 78, "train", 8, 32, 32, paraphrase=True)]
    scores_in, scores_out = drift.score(encoder.encode(inside).pooled), drift.score(encoder.encode(UNRELATED).pooled)
    labels = torch.cat([torch.zeros(len(scores_in)), torch.ones(len(scores_out))]).int()
    auc = float(binary_auroc(torch.cat([scores_in, scores_out]), labels))
    ood_in = float(drift.out_of_distribution(encoder.encode(inside).pooled).float().mean())
    ood_out = float(drift.out_of_distribution(encoder.encode(UNRELATED).pooled).float().mean())
    print(f"{len(inside)} in-world prompts (held-out compositions + paraphrases) vs {len(UNRELATED)} others: ROC AUC "
          f"{auc:.3f}; flagged out of distribution: {ood_in:.1%} of in-world, {ood_out:.1%} of others")


if __name__ == "__main__":
    main()
