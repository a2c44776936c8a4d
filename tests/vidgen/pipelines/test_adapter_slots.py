"""Adapters applied per pipeline call (`AdapterSlots`: loaded unfused, chosen with `set_adapters`) render what the
same adapter fused at load renders, switch call by call on one pipeline, stay within their capacity by unloading the
least recently used, and are refused on another base naming both digests."""

import numpy as np
import pytest

from storage.package import ModelFileError
from tests.lora_adapters import make_adapter
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.adapters import AdapterSlots
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.references import model_digest, verify_model

SEEDS = (0, 1)


@pytest.fixture(scope="module")
def adapters(tiny_pipelines, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    wan = tiny_pipelines["wan"]
    return {name: verify_model(str(make_adapter(root / name, wan, seed))) for name, seed in
            (("a", 1), ("b", 2), ("c", 3))}


@pytest.fixture(scope="module")
def served(tiny_pipelines):
    """The tiny Wan pipeline loaded once, as a serving replica loads it (float32), with two adapter slots."""
    from vidgen.pipelines.load import load_pipeline

    base = verify_model(str(tiny_pipelines["wan"]))
    pipeline = load_pipeline(base, options=PipelineOptions(dtype="float32"))
    return pipeline, AdapterSlots(pipeline.pipe, base.label, model_digest(base.sums), capacity=2)


def render(pipeline, seed: int) -> np.ndarray:
    clip, problems = resolve_clip(ClipRequest(prompt="a red square moving left", seed=seed, frames=5, height=32,
                                              width=32, steps=2, guidance=1.0), pipeline.capabilities)
    assert not problems
    return pipeline.generate([clip]).frames[0].astype(int)


def fused(tiny_pipelines, adapter) -> object:
    """The pipeline as `vidgen render --lora` loads it: the adapter fused into the weights."""
    from vidgen.pipelines.load import load_pipeline

    return load_pipeline(str(tiny_pipelines["wan"]),
                         options=PipelineOptions(dtype="float32", lora=str(adapter.folder)))


def test_an_adapter_chosen_per_call_renders_what_the_fused_adapter_renders(served, adapters, tiny_pipelines):
    pipeline, slots = served
    reference = fused(tiny_pipelines, adapters["a"])
    for seed in SEEDS:
        slots.activate(adapters["a"])
        per_call, at_load = render(pipeline, seed), render(reference, seed)
        slots.activate(None)
        base = render(pipeline, seed)
        # W x + s B(A x) and (W + s B A) x round apart in float32: measured 0 grey levels apart on every seed here
        # (the fused-vs-diffusers test of `vidgen render --lora` allows 2); a grey level leaves room for other BLAS
        assert np.abs(per_call - at_load).max() <= 1, seed
        assert np.abs(per_call - base).mean() > 0.5, seed  # the adapter is really applied


def test_one_pipeline_switches_adapters_call_by_call(served, adapters):
    pipeline, slots = served
    slots.activate(None)
    base = render(pipeline, 5)
    slots.activate(adapters["a"])
    with_a = render(pipeline, 5)
    slots.activate(adapters["b"])
    with_b = render(pipeline, 5)
    slots.activate(None)
    assert np.array_equal(render(pipeline, 5), base)  # no adapter: the base model, whatever was loaded before
    slots.activate(adapters["a"])
    assert np.array_equal(render(pipeline, 5), with_a)  # a again after b: a's frames
    assert np.abs(with_a - with_b).mean() > 0.5


def test_past_its_capacity_the_least_recently_used_adapter_is_unloaded(served, adapters):
    pipeline, slots = served
    for name in ("a", "b", "a", "c"):  # b is the least recently used when c arrives
        slots.activate(adapters[name])
    kept = {f"lora_{model_digest(adapters[n].sums)[:16]}" for n in ("a", "c")}
    assert set(slots.loaded) == kept
    assert set(pipeline.pipe.get_list_adapters()["transformer"]) == kept  # b's peft layers are gone too
    slots.activate(adapters["b"])  # and it loads again on demand, now unloading a
    assert len(slots.loaded) == 2 and len(pipeline.pipe.get_list_adapters()["transformer"]) == 2


def test_an_adapter_for_another_base_is_refused_naming_both_digests(served, tiny_pipelines, tmp_path):
    from examples.tiny_pipelines import save_tiny_pipeline

    pipeline, slots = served
    other_base = save_tiny_pipeline("wan", tmp_path / "other-wan", seed=1)
    stranger = verify_model(str(make_adapter(tmp_path / "stranger", other_base, seed=4)))
    other_digest = model_digest(verify_model(str(other_base)).sums)[:12]
    loaded = dict(slots.loaded)
    with pytest.raises(ModelFileError, match=rf"trained on other-wan#{other_digest}, not on tiny-wan#.*base digest "
                                             rf"{other_digest} is not {slots.base_digest[:12]}"):
        slots.activate(stranger)
    assert slots.loaded == loaded  # nothing loaded, nothing evicted
