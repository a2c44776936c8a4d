"""A request's `lora` as the router judges it per tier: named by the tier's `loras` (by name or reference) or refused
naming the ones it serves, made for the model the tier serves or refused naming both digests, on a diffusers model;
and tier configs that cannot serve adapters per request refused at load."""

import asyncio

import pytest
from pydantic import ValidationError

from cluster.serve_config import TierConfig
from cluster.tier_adapters import AdapterCatalog, adapter_problem
from cluster.tier_report import ServedModel
from tests.lora_adapters import make_adapter
from vidgen.pipelines.adapters import AdapterInfo

BASE_DIGEST = "0123456789ab" + "c" * 52
TIER = TierConfig(model="tiny-wan@v1", cost_per_clip=1, loras={"ink": "ink-lora@v2", "anime": "/adapters/anime"})
SERVED = ServedModel(model="tiny-wan@v1", label="tiny-wan@v1#0123456789ab", folder="tiny-wan", backend="diffusers",
                     pipeline_class="WanPipeline", int8=False, max_batch_size=1)


def info(base_digest: str) -> AdapterInfo:
    return AdapterInfo("WanPipeline", f"tiny-wan@v1#{base_digest[:12]}", base_digest, 4, 8.0, ["to_q"])


def test_a_tier_takes_an_adapter_by_name_or_by_reference():
    assert TIER.adapter_reference("ink") == "ink-lora@v2" and TIER.adapter_reference("ink-lora@v2") == "ink-lora@v2"
    assert TIER.adapter_reference("ink-lora@v3") is None and TIER.adapter_reference("/adapters") is None
    assert adapter_problem("ink", "cloud", TIER, SERVED, ("ink-lora@v2#fedcba987654", info(BASE_DIGEST))) is None


def test_an_adapter_the_tier_does_not_serve_is_refused_naming_those_it_does():
    problem = adapter_problem("sketch", "cloud", TIER, SERVED, None)
    assert problem.field == "lora" and problem.reason == "'sketch' is not an adapter the cloud tier serves (it " \
                                                         "serves: anime, ink)"
    none = adapter_problem("ink", "edge", TierConfig(cost_per_clip=1), None, None)
    assert none.reason.endswith("(it serves: none)")


def test_an_adapter_made_for_another_base_is_refused_naming_both_digests():
    other = "feedfacecafe" + "0" * 52
    problem = adapter_problem("ink", "cloud", TIER, SERVED, ("ink-lora@v2#fedcba987654", info(other)))
    assert problem.field == "lora"
    assert "trained on base digest feedfacecafe" in problem.reason and "digest 0123456789ab" in problem.reason


def test_a_tier_serving_a_vidgen_model_takes_no_adapter():
    vidgen = SERVED.model_copy(update={"backend": "vidgen", "label": "shapes-tiny#0123456789ab"})
    assert "adapters apply to diffusers models" in adapter_problem("ink", "cloud", TIER, vidgen, None).reason


def test_the_catalog_reads_a_real_adapter_package_and_checks_it_per_tier(tiny_pipelines, tmp_path):
    from vidgen.pipelines.references import verify_model

    adapter = make_adapter(tmp_path / "ink", tiny_pipelines["wan"], seed=1)
    base = verify_model(str(tiny_pipelines["wan"]))
    tiers = {"cloud": TierConfig(cost_per_clip=1, loras={"ink": str(adapter)}), "edge": TierConfig(cost_per_clip=1)}
    served = {"cloud": SERVED.model_copy(update={"label": base.label}), "edge": SERVED}
    found = asyncio.run(AdapterCatalog(refresh_s=60).problems("ink", tiers, served))
    assert found["cloud"] == [] and found["edge"][0].reason.startswith("'ink' is not an adapter the edge tier")
    elsewhere = {"cloud": SERVED}  # the cloud tier now serves another model
    moved = asyncio.run(AdapterCatalog(refresh_s=60).problems("ink", tiers, elsewhere))
    assert "trained on base digest" in moved["cloud"][0].reason


@pytest.mark.parametrize(("fields", "names"), [
    ({"int8": True}, "set int8 false"),
    ({"pipeline": {"lora": "ink-lora@v1"}}, "use one of them"),
    ({"loras": {"bad name": "x"}}, "loras.bad name"),
])
def test_tier_configs_that_cannot_serve_adapters_per_request_are_refused(fields, names):
    with pytest.raises(ValidationError, match=names):
        TierConfig(cost_per_clip=1, **{"loras": {"ink": "ink-lora@v1"}, **fields})
