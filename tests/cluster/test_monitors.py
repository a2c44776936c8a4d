"""The quality probe scores a clip of its own, at the tier's settings and the probe seed, never the caller's: the
issue's reproduction was that steps=1 requests scored 0.25 against 1.0 for default ones, so a few hundred cheap
requests could force a rollback of a good version."""

import pytest

from cluster.monitors import PROBE_SEED, QualityMonitor, probe_clip
from cluster.serve_config import QualityProbe, TierConfig
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.load import load_pipeline

PROMPTS = ("a red square moving right", "a green circle moving down", "a blue triangle moving left",
           "a yellow square moving up", "a magenta circle moving left", "a cyan triangle moving right")


@pytest.fixture(scope="module")
def tier():
    """The shipped model's pipeline and its capabilities with a tier's defaults (steps 12)."""
    pipeline = load_pipeline("shapes-tiny")
    return pipeline, TierConfig(model="shapes-tiny", cost_per_clip=1, steps=12).applied_to(pipeline.capabilities)


def test_a_probe_renders_at_the_tiers_settings_whatever_the_caller_asked(tier):
    pipeline, caps = tier
    callers = [resolve_clip(ClipRequest(prompt=p, steps=1, guidance=1.0, seed=1000 + i), caps)[0]
               for i, p in enumerate(PROMPTS)]
    probes = [probe_clip(c.prompt, caps) for c in callers]
    assert {(p.steps, p.guidance, p.seed, p.frames, p.height, p.width) for p in probes} == {
        (12, caps.guidance, PROBE_SEED, *caps.shape)}
    # what the caller's cheap clips would have scored, and what the probe's own clips score
    cheap, probed = QualityMonitor("cloud", QualityProbe()), QualityMonitor("cloud", QualityProbe())
    for clips, monitor in ((callers, cheap), (probes, probed)):
        frames = pipeline.generate(clips).frames
        for clip, clip_frames in zip(clips, frames, strict=True):
            monitor.score(clip.prompt, clip_frames, pipeline.backend)
    assert cheap.quality() < QualityProbe().min_quality <= 0.8 <= probed.quality()
    assert len(probed.consistencies) == len(PROMPTS)
