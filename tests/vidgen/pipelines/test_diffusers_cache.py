"""Issue 28 part 3: step caching of diffusers pipelines through diffusers' own cache hooks, on a tiny random-weight
Wan (examples/tiny_pipelines.py), with the passes it skipped counted per clip."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.diffusers_cache import enable_step_cache
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions, StepCacheOptions

STEPS = 6


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory) -> Path:
    script = Path(__file__).resolve().parents[3] / "examples" / "tiny_pipelines.py"
    spec = importlib.util.spec_from_file_location("tiny_pipelines", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.save_tiny_pipeline("wan", tmp_path_factory.mktemp("cache") / "wan")


def _generate(folder: Path, cache: dict | None):
    pipeline = load_pipeline(folder, options=PipelineOptions(cache=cache))
    clips = [resolve_clip(ClipRequest(prompt="a red square moving up", seed=s, steps=STEPS, frames=9, height=32,
                                      width=32), pipeline.capabilities)[0] for s in (1, 2)]
    return pipeline.generate(clips)


def test_wan_with_first_block_cache_skips_steps_and_stays_close_to_uncached(tiny_wan):
    uncached = _generate(tiny_wan, None)
    exact = _generate(tiny_wan, {"kind": "first_block", "threshold": 0})
    loose = _generate(tiny_wan, {"kind": "first_block", "threshold": 1.0})
    assert uncached.cached_steps is None
    assert np.array_equal(exact.frames, uncached.frames)
    assert exact.cached_steps == [{"full": STEPS, "skipped": 0}] * 2
    # guided Wan runs its prompted and unprompted passes apart, each with its own cache: the first of each is full
    assert loose.cached_steps == [{"full": 1, "skipped": STEPS - 1}] * 2
    diff = np.abs(loose.frames.astype(np.int16) - uncached.frames.astype(np.int16))
    assert 0 < diff.mean() < 4 and diff.max() <= 64  # measured 0.4 / 10 at 10 steps; random weights move little


def test_a_transformer_without_diffusers_cache_hooks_is_refused_by_class():
    class NoTransformerHooks:
        transformer = torch.nn.Linear(2, 2)

    with pytest.raises(ValueError, match="pipeline.cache: Linear does not support diffusers' cache hooks"):
        enable_step_cache(NoTransformerHooks(), StepCacheOptions(kind="first_block"))
