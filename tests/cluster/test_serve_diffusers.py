"""Serving a diffusers tier next to a vidgen tier over HTTP: requests placed by what each tier's model makes, 400
naming the field when neither can, each tier's capabilities listed, and the edge tier batching requests that
arrive together."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from storage.video import decode
from tests.serving import AUTH, PROMPT, board_reports, deployed, post, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(ray_cluster, tiny_pipelines, tmp_path_factory):
    """edge: the shipped vidgen model (8x32x32 clips, batches of up to 4); cloud: a tiny Wan pipeline folder."""
    tmp = tmp_path_factory.mktemp("serve-diffusers")
    args = {
        "renders_uri": str(tmp / "renders"),
        "tiers": {
            "edge": {"steps": 2, "cost_per_clip": 1, "num_cpus": 0.5, "resources": {"edge": 1},
                     "max_batch_size": 4, "batch_wait_timeout_s": 0.5, "max_ongoing_requests": 4,
                     "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
            "cloud": {"model": str(tiny_pipelines["wan"]), "steps": 2, "frames": 9, "height": 32, "width": 32,
                      "quality_probe": {"every": 1}, "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1},
                      "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        },
    }
    with deployed(tmp, args) as server:
        yield server


def test_each_request_goes_to_a_tier_whose_model_makes_it(server):
    base, _ = server
    cases = [({"prompt": PROMPT}, "edge", (8, 32, 32, 3)),
             ({"prompt": PROMPT, "frames": 9}, "cloud", (9, 32, 32, 3)),  # the vidgen model makes 8 frames only
             ({"prompt": "a dog", "negative_prompt": "blurry"}, "cloud", (9, 32, 32, 3)),
             ({"prompt": "a cat", "frames": 5, "height": 48, "quality": "high"}, "cloud", (5, 48, 32, 3))]
    for body, tier, shape in cases:
        response = post(base, body)
        assert response.status_code == 200, (body, response.text)
        assert response.headers["X-Vidgen-Tier"] == tier, body
        assert response.headers["X-Vidgen-Model"].startswith("tiny-wan#" if tier == "cloud" else "shapes-tiny#")
        assert decode(response.content).shape == shape
    neither = post(base, {"prompt": PROMPT, "frames": 10})
    assert neither.status_code == 400
    error = neither.json()["error"]
    assert error["param"] == "frames"
    edge, cloud = error["message"].split("; frames: cloud: ")
    assert edge.startswith("frames: edge: frames=10") and "8x32x32" in edge
    assert cloud.startswith("frames=10") and "4k+1" in cloud
    high_eight = post(base, {"prompt": PROMPT, "frames": 8, "quality": "high"})  # edge: not high; cloud: not 8
    assert high_eight.status_code == 422 and "4k+1" in high_eight.json()["error"]["message"]


def test_models_lists_each_tiers_capabilities(server):
    base, _ = server
    tiers = {t["tier"]: t for t in requests.get(f"{base}/v1/models", headers=AUTH, timeout=10).json()["data"]}
    cloud, edge = tiers["cloud"], tiers["edge"]
    assert cloud["serves"]["backend"] == "diffusers" and cloud["serves"]["pipeline_class"] == "WanPipeline"
    assert cloud["capabilities"]["frames"]["multiple"] == 4 and cloud["capabilities"]["negative_prompt"]
    assert cloud["capabilities"]["frames"]["default"] == 9 and cloud["capabilities"]["steps"] == 2
    assert edge["serves"]["backend"] == "vidgen" and edge["capabilities"]["frames"]["max"] == 8
    assert edge["serves"]["max_batch_size"] == 4


def test_requests_arriving_together_are_sampled_as_one_batch(server):
    base, _ = server
    prompts = ["a red square moving right", "a green circle moving down", "a blue triangle moving left",
               "a yellow square moving up"]
    alone = post(base, {"prompt": prompts[1], "seed": 7})
    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(lambda p: post(base, {"prompt": p, "seed": 7, "quality": "draft"}), prompts))
    assert all(r.status_code == 200 and r.headers["X-Vidgen-Tier"] == "edge" for r in together)
    edge = wait_for(lambda: [r for r in board_reports() if r.tier == "edge" and r.largest_batch > 1], 10,
                    "the edge replica to report a batch")
    assert edge[0].largest_batch <= 4
    # a clip depends on its request, not on what it was batched with (within a grey level of the same clip alone)
    import numpy as np

    difference = np.abs(decode(alone.content).astype(int) - decode(together[1].content).astype(int))
    assert difference.mean() < 1.0


def test_prompts_far_from_the_training_captions_are_counted_not_kept(server):
    base, _ = server
    for prompt in ("a red square moving right", "a blue circle moving down"):
        assert post(base, {"prompt": prompt, "quality": "draft"}).status_code == 200
    before = requests.get(f"{base}/v1/models", headers=AUTH, timeout=10).json()["data"]
    for prompt in ("a cat sleeping on a sofa", "fireworks over a city skyline", "a chef chopping onions"):
        assert post(base, {"prompt": prompt, "quality": "draft"}).status_code == 200
    edge = wait_for(lambda: [r for r in board_reports() if r.tier == "edge"
                             and (r.prompt_ood_share or 0) >= 3 / (3 + 2 + 8)], 10, "the drift share")
    assert edge[0].prompt_ood_share < 1  # the in-world prompts (this module's others too) are in the window
    tiers = {t["tier"]: t for t in requests.get(f"{base}/v1/models", headers=AUTH, timeout=10).json()["data"]}
    assert tiers["edge"]["prompt_ood_share"] > ({t["tier"]: t for t in before}["edge"]["prompt_ood_share"] or 0)
    assert tiers["cloud"]["prompt_ood_share"] is None  # a diffusers model: no reference set to compare with
    cloud = [r for r in board_reports() if r.tier == "cloud"][0]
    assert 0 < cloud.temporal_consistency <= 1 and cloud.quality is None  # probed; no detector for its clips
