"""The placement policy, rule by rule and in order: jurisdiction, capability, health, latency, cost."""

import pytest

from cluster.placement import PlacementRequest, PolicyConfig, TierState, place


def edge(**kw):
    return TierState(**{"name": "edge", "seconds_per_clip": 0.5, "cost_per_clip": 1.0, **kw})


def cloud(**kw):
    return TierState(**{"name": "cloud", "seconds_per_clip": 0.2, "cost_per_clip": 10.0, **kw})


CASES = [
    # (request, tiers, expected tier, expected status, words in the reason)
    ({}, [edge(), cloud()], "edge", 200, "cheapest"),
    ({"quality": "high"}, [edge(), cloud()], "cloud", 200, "cheapest capable"),
    ({}, [edge(cannot="frames: frames=9 cannot be made"), cloud()], "cloud", 200,
     "skipped edge: frames: frames=9 cannot be made"),
    ({}, [edge(), cloud(cannot="negative_prompt: no")], "edge", 200, "cheapest"),
    ({}, [edge(cannot="frames: 8 only"), cloud(cannot="frames: 4k+1 only")], None, 422, "cloud: frames: 4k+1 only"),
    ({"frames": 32}, [edge(), cloud()], "cloud", 200, "cheapest capable"),
    ({"height": 128, "width": 128}, [edge(), cloud()], "cloud", 200, "cheapest capable"),
    ({"quality": "high"}, [edge()], None, 422, "quality up to standard"),
    ({"region": "eu"}, [edge(regions=["us"]), cloud(regions=["eu"])], "cloud", 200, "cheapest"),
    ({"region": "eu"}, [edge(regions=["us"]), cloud(regions=["us"])], None, 451, "region 'eu'"),
    ({"region": "eu", "quality": "high"}, [edge(regions=["eu"]), cloud(regions=["us"])], None, 422, "quality"),
    ({}, [edge(healthy=False), cloud()], "cloud", 200, "spilled from edge: edge is unhealthy"),
    ({}, [edge(queue_depth=20, replicas=2), cloud()], "cloud", 200, "spilled from edge: edge is overloaded"),
    ({}, [edge(replicas=0), cloud()], "cloud", 200, "edge has no replicas"),
    ({"allow_spill": False}, [edge(healthy=False), cloud()], None, 503, "does not allow spilling"),
    ({}, [edge(healthy=False), cloud(healthy=False)], None, 503, "cloud is unhealthy"),
    ({"latency_budget_ms": 400}, [edge(), cloud()], "cloud", 200, "edge ~500 ms exceeds the 400 ms budget"),
    ({"latency_budget_ms": 1200}, [edge(queue_depth=2), cloud()], "cloud", 200, "edge ~1500 ms"),
    ({"latency_budget_ms": 100}, [edge(), cloud()], None, 422, "below the fastest tier's 200 ms"),
    ({"latency_budget_ms": 100}, [edge(), cloud(healthy=False)], None, 503, "no tier meets the 100 ms budget now"),
    ({"latency_budget_ms": 350}, [edge(queue_depth=1), cloud(queue_depth=1)], None, 503,
     "no tier meets the 350 ms budget now"),
    ({"latency_budget_ms": 600}, [edge(), cloud()], "edge", 200, "cheapest"),
    ({}, [edge(cost_per_clip=10.0, seconds_per_clip=0.3), cloud()], "cloud", 200, "cheapest"),  # tie: faster
]


@pytest.mark.parametrize(("request_fields", "tiers", "tier", "status", "words"), CASES)
def test_rules_and_their_order(request_fields, tiers, tier, status, words):
    placement = place(PlacementRequest(**request_fields), tiers)
    assert (placement.tier, placement.status) == (tier, status), placement.reason
    assert words in placement.reason


def test_thresholds_are_config():
    strict = PolicyConfig(edge_max_frames=4, overload_queue_per_replica=1)
    assert place(PlacementRequest(frames=8), [edge(), cloud()], strict).tier == "cloud"
    assert place(PlacementRequest(frames=4), [edge(queue_depth=2), cloud()], strict).tier == "cloud"
    assert place(PlacementRequest(frames=4), [edge(queue_depth=1), cloud()], strict).tier == "edge"
    with pytest.raises(ValueError, match="overload_queue_per_replica"):
        PolicyConfig(overload_queue_per_replica=0)


SMALL, WIDE, LONG = (8, 32, 32), (9, 96, 96), (24, 32, 32)  # 32x32 fits edge_max_pixels 4096, 96x96 does not
DEFAULT_SHAPE_CASES = [
    # (request, edge's default clip, cloud's default clip, expected tier, words in the reason)
    # cloud listed first, as if it had reported first: its default must not judge the edge tier
    ({}, SMALL, WIDE, "edge", "cheapest"),
    ({}, WIDE, SMALL, "cloud", "skipped edge renders up to 4096 pixels a frame, 96x96 by its model's default"),
    ({}, LONG, SMALL, "cloud", "skipped edge renders up to 16 frames, 24 by its model's default"),
    ({"height": 32, "width": 32}, WIDE, SMALL, "edge", "cheapest"),  # named sizes, not the default, are judged
    ({"height": 64, "width": 96}, SMALL, SMALL, "cloud", "edge renders up to 4096 pixels a frame, asked 64x96"),
    ({"frames": 8}, LONG, SMALL, "edge", "cheapest"),
]


@pytest.mark.parametrize(("request_fields", "edge_shape", "cloud_shape", "tier", "words"), DEFAULT_SHAPE_CASES)
def test_a_size_left_out_is_judged_at_each_tiers_own_default(request_fields, edge_shape, cloud_shape, tier, words):
    tiers = [cloud(default_shape=cloud_shape), edge(default_shape=edge_shape)]
    placement = place(PlacementRequest(**request_fields), tiers)
    assert (placement.tier, placement.status) == (tier, 200), placement.reason
    assert words in placement.reason


def test_an_http_request_naming_no_size_leaves_each_tier_its_default():
    from cluster.api import VideoRequest

    request = VideoRequest(prompt="a red square moving right").placement_request()
    assert (request.frames, request.height, request.width) == (None, None, None)
    assert place(request, [cloud(default_shape=WIDE), edge(default_shape=SMALL)]).tier == "edge"
