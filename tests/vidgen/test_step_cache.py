"""Issue 28 part 3: the first-block cache of vidgen's DiT (vidgen/step_cache.py), through the shipped shapes-tiny
model as `vidgen generate`, render and serving load it, and the `pipeline.cache` option that turns it on."""

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions, StepCacheOptions
from vidgen.step_cache import FirstBlockCache

STEPS = 8  # a short trajectory of the real model: every step decision is still exercised


@pytest.fixture(scope="module")
def shapes(encoder):
    def load(cache: dict | None = None):
        return load_pipeline("shapes-tiny", encoder, options=PipelineOptions(cache=cache))
    return load


def _clips(pipeline, seeds=(3, 4)):
    return [resolve_clip(ClipRequest(prompt="a red circle moving left", seed=s, steps=STEPS), pipeline.capabilities)[0]
            for s in seeds]


def test_threshold_zero_gives_the_uncached_frames_and_counts_every_step_in_full(shapes):
    plain, zero = shapes(), shapes({"kind": "first_block", "threshold": 0})
    uncached, cached = plain.generate(_clips(plain)), zero.generate(_clips(zero))
    assert np.array_equal(uncached.frames, cached.frames)
    assert uncached.cached_steps is None
    assert cached.cached_steps == [{"full": STEPS, "skipped": 0}] * 2


def test_a_large_threshold_skips_all_but_the_first_step_and_records_it(shapes):
    plain, loose = shapes(), shapes({"kind": "first_block", "threshold": 1e6})
    uncached, cached = plain.generate(_clips(plain)), loose.generate(_clips(loose))
    assert cached.cached_steps == [{"full": 1, "skipped": STEPS - 1}] * 2  # the first step has nothing to reuse
    assert not np.array_equal(uncached.frames, cached.frames)


def test_a_skipped_step_adds_the_cached_residual_of_the_other_blocks():
    class Add(torch.nn.Module):
        def __init__(self, value):
            super().__init__()
            self.value = value

        def forward(self, x):
            return x + self.value

    first, rest = Add(torch.tensor(1.0)), Add(torch.tensor(10.0))
    cache = FirstBlockCache(threshold=0.2)
    x = torch.zeros(1, 2, 3)
    assert torch.equal(cache.run([first, rest], x), torch.full((1, 2, 3), 11.0))  # first step: full
    first.value, rest.value = torch.tensor(1.1), torch.tensor(99.0)  # first residual moved by 10%: under 0.2
    assert cache.relative_change(torch.full((1, 2, 3), 1.1)) == pytest.approx(0.1)
    assert torch.allclose(cache.run([first, rest], x), torch.full((1, 2, 3), 11.1))  # 1.1 + the cached 10
    first.value = torch.tensor(2.0)  # 100% change: the rest runs again
    assert torch.equal(cache.run([first, rest], x), torch.full((1, 2, 3), 101.0))
    assert (cache.full, cache.skipped) == (2, 1)


def test_the_cache_option_validates_and_names_what_is_wrong():
    assert StepCacheOptions.from_flag("first_block:0.1") == StepCacheOptions(kind="first_block", threshold=0.1)
    assert StepCacheOptions.from_flag("sea").threshold == 0.05
    with pytest.raises(ValueError, match=r"--cache teacache:0.1: kind: .*'first_block' or 'sea'"):
        StepCacheOptions.from_flag("teacache:0.1")
    with pytest.raises(ValueError, match="threshold: .*greater than or equal to 0"):
        StepCacheOptions.from_flag("first_block:-1")
    with pytest.raises(ValidationError, match=r"cache\.kind"):
        PipelineOptions(cache={"kind": "magic", "threshold": 0.1})
    with pytest.raises(ValidationError, match=r"cache\.thresh"):
        PipelineOptions(cache={"kind": "first_block", "thresh": 0.1})  # extra keys are refused, not ignored


def test_a_vidgen_model_refuses_a_diffusers_only_cache_kind(shapes):
    with pytest.raises(ValueError, match="pipeline.cache.kind: sea is a diffusers cache.*first_block"):
        shapes({"kind": "sea", "threshold": 0.1})


def test_render_configs_carry_the_cache_and_it_joins_the_request(tmp_path):
    from jobs.render import RenderConfig, plan_batches
    from vidgen.clip_request import Capabilities
    from vidgen.manifest import parse_manifest

    caps = Capabilities(frames=8, height=32, width=32, steps=24, guidance=3.0)
    rows, _ = parse_manifest(json.dumps({"id": "a", "prompt": "a red square moving up"}).encode(), "jsonl")
    plain = RenderConfig(manifest="m.jsonl")
    cached = RenderConfig(manifest="m.jsonl", pipeline={"cache": {"kind": "first_block", "threshold": 0.1}})
    requests = [plan_batches(rows, caps, cfg, "m@v1")[0][0][0].request for cfg in (plain, cached)]
    assert requests[0] != requests[1]  # a cached render is not done for an uncached request, nor the reverse


def test_generate_prints_the_steps_it_skipped_and_refuses_a_bad_cache_flag(tmp_path):
    from vidgen.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["generate", "a red square moving up", "--cache", "fast", "--out",
                              str(tmp_path / "a.gif")])
    assert bad.exit_code != 0 and "--cache fast: kind" in bad.output
    good = runner.invoke(app, ["generate", "a red square moving up", "--model", "shapes-tiny", "--steps", "6",
                               "--cache", "first_block:1000", "--out", str(tmp_path / "a.gif")])
    assert good.exit_code == 0, good.output
    assert "1 steps in full, 5 from cache" in good.output
