"""A cancelled request stops the sampler at its next step when it is alone in its sampler call, on both backends, and
leaves a batch-mate that is still wanted unharmed (`cluster.render_jobs`, as the tier replica calls the pipeline)."""

import threading

import numpy as np
import pytest

from cluster.render_jobs import RenderJob, SamplingCancelled, sampler_progress
from vidgen.clip_request import ClipRequest, resolve_clip

STEPS = 40


@pytest.fixture(scope="module")
def shipped(encoder):
    from vidgen.pipelines.load import load_pipeline

    return load_pipeline("shapes-tiny", encoder)


@pytest.fixture(scope="module")
def wan(tiny_pipelines):
    from vidgen.pipelines.load import load_pipeline

    return load_pipeline(str(tiny_pipelines["wan"]))


def clip_of(pipeline, prompt="a red square moving right", seed=0):
    clip, problems = resolve_clip(ClipRequest(prompt=prompt, seed=seed, steps=STEPS), pipeline.capabilities)
    assert not problems
    return clip


def cancel_at(job: RenderJob, step: int) -> RenderJob:
    """`job`, cancelled from another thread (as the replica's event loop does) once the sampler reports `step`."""
    reached = threading.Event()
    job.on_step = lambda i: i >= step and reached.set()
    threading.Thread(target=lambda: reached.wait(60) and job.cancelled.set(), daemon=True).start()
    return job


@pytest.mark.parametrize("backend", ["shipped", "wan"])
def test_a_lone_cancelled_request_stops_the_sampler_at_its_next_step(backend, request):
    pipeline = request.getfixturevalue(backend)
    job = cancel_at(RenderJob(clip_of(pipeline)), step=2)
    counted = []
    with pytest.raises(SamplingCancelled) as stopped:
        pipeline.generate([job.clip], progress=sampler_progress([job], lambda: counted.append(1)))
    # the flag is set on another thread while the sampler runs on: it stops at the first step that sees it
    assert 2 <= stopped.value.step < STEPS and len(counted) == stopped.value.step == job.step


def test_a_cancelled_batch_mate_leaves_the_other_clip_as_it_would_be_alone(shipped):
    wanted, dropped = RenderJob(clip_of(shipped, seed=1)), cancel_at(RenderJob(clip_of(shipped, "a blue circle", 2)),
                                                                     step=1)
    together = shipped.generate([wanted.clip, dropped.clip], progress=sampler_progress([wanted, dropped]))
    alone = shipped.generate([wanted.clip])
    assert dropped.cancelled.is_set() and wanted.step == STEPS  # sampled to the end for the one still wanted
    # batched matmuls round differently from a lone clip's: one grey level at most
    assert np.abs(together.frames[0].astype(int) - alone.frames[0].astype(int)).max() <= 1


def test_only_jobs_with_the_same_settings_and_adapter_share_a_sampler_call(shipped):
    from pathlib import Path

    from storage.package import VerifiedFolder
    from vidgen.pipelines.references import VerifiedModel

    def adapter(digest: str) -> VerifiedModel:
        return VerifiedModel(VerifiedFolder(Path("/adapters") / digest, {"pytorch_lora_weights.safetensors": digest}),
                             f"ink#{digest[:12]}")

    ink, ink_again, other = adapter("a" * 64), adapter("a" * 64), adapter("b" * 64)
    clip = clip_of(shipped)
    groups = {RenderJob(clip, adapter=a).sampler_group for a in (ink, ink_again, other, None)}
    assert len(groups) == 3  # the same adapter files (by digest) share a call; another adapter or none do not
    assert RenderJob(clip).sampler_group == (clip.settings, None)
