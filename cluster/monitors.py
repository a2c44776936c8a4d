"""What a serving replica watches: how far its prompts are from the training captions, and how good its clips are.

Both keep numbers, never prompts, and export them through `ray.serve.metrics` (Ray's metrics agent). The quality
probe scores a clip the replica renders for it (`probe_clip`), never the caller's: a caller chooses steps, guidance
and seed, and clips made cheaply on purpose (steps=1) would otherwise drag the tier's quality down and force a
rollback of a good version.
"""

from __future__ import annotations

from collections import deque

from ray.serve import metrics

from vidgen.clip_request import Capabilities, ClipRequest, ResolvedClip, resolve_clip

PROBE_SEED = 0  # every probe clip's seed: probes of one prompt compare like with like across versions


def probe_clip(prompt: str, caps: Capabilities) -> ResolvedClip:
    """The clip a probe of a served `prompt` renders: the tier's default shape, steps and guidance (`caps`, the
    model's capabilities with the tier's defaults) and the probe seed; nothing of the caller's request but its
    prompt."""
    clip, _ = resolve_clip(ClipRequest(prompt=prompt, seed=PROBE_SEED), caps)  # defaults only: nothing to refuse
    return clip


class PromptMonitor:
    """Out-of-distribution prompts over the last `window` requests, and as Prometheus metrics
    (`vidgen_prompts{tier,ood}`, `vidgen_prompt_ood_score{tier}`). Keeps scores, never prompts."""

    def __init__(self, tier: str, window: int):
        self.tier, self.recent = tier, deque(maxlen=window)
        self.prompts = metrics.Counter("vidgen_prompts", "prompts by tier and whether they were out of distribution",
                                       tag_keys=("tier", "ood"))
        self.scores = metrics.Histogram("vidgen_prompt_ood_score", "prompt drift scores (0: like training captions)",
                                        boundaries=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8], tag_keys=("tier",))

    def observe(self, score: float, threshold: float) -> None:
        ood = score > threshold
        self.recent.append(ood)
        self.prompts.inc(tags={"tier": self.tier, "ood": str(ood).lower()})
        self.scores.observe(score, tags={"tier": self.tier})

    def share(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None


class QualityMonitor:
    """The rolling prompt accuracy (in-world prompts) and temporal consistency (any clip) of sampled served prompts
    (`QualityProbe`; each probe a clip of its own, `probe_clip`), as `vidgen_quality_probe{tier}`,
    `vidgen_temporal_consistency{tier}` and in the replica's report; `vidgen_automatic_rollbacks{tier}` counts the
    rollbacks it triggered."""

    def __init__(self, tier: str, probe):
        self.tier, self.probe, self.seen, self.recent = tier, probe, 0, deque(maxlen=probe.window)
        self.consistencies = deque(maxlen=probe.window)
        self.gauge = metrics.Gauge("vidgen_quality_probe", "rolling prompt accuracy of sampled served clips",
                                   tag_keys=("tier",))
        self.consistency_gauge = metrics.Gauge("vidgen_temporal_consistency", "rolling temporal consistency of "
                                               "sampled served clips (1: no flicker)", tag_keys=("tier",))
        self.rollbacks = metrics.Counter("vidgen_automatic_rollbacks", "alias rollbacks after a quality regression",
                                         tag_keys=("tier",))

    def due(self) -> bool:
        self.seen += 1
        return self.seen % self.probe.every == 0

    def score(self, prompt: str, frames, backend: str) -> None:
        """Score a probe clip (`probe_clip`) of `prompt`: its temporal consistency, and for a vidgen model of the
        built-in world with an in-world prompt its prompt accuracy (all three)."""
        from vidgen import synth
        from vidgen.metrics import prompt_accuracy, temporal_consistency

        self.observe_consistency(temporal_consistency(frames))
        truth = synth.parse_caption(prompt) if backend == "vidgen" else None
        if truth is not None:
            self.observe(prompt_accuracy([frames], [truth]).all_three)

    def observe(self, accuracy: float) -> None:
        self.recent.append(accuracy)
        self.gauge.set(self.quality(), tags={"tier": self.tier})

    def observe_consistency(self, value: float) -> None:
        self.consistencies.append(value)
        self.consistency_gauge.set(self.consistency(), tags={"tier": self.tier})

    def consistency(self) -> float | None:
        return sum(self.consistencies) / len(self.consistencies) if self.consistencies else None

    def quality(self) -> float | None:
        return sum(self.recent) / len(self.recent) if self.recent else None

    def regressed(self) -> bool:
        return len(self.recent) >= self.probe.min_probes and self.quality() < self.probe.min_quality

    def reset(self) -> None:
        self.recent.clear()
        self.consistencies.clear()
