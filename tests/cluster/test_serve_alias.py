"""A serving tier that names its model by an alias follows it without a redeploy: under a steady load, the alias
moves to another version, the replica loads it beside the old one and swaps between batches, and no request fails;
a tier whose served clips get worse rolls its alias back by itself.
"""

import threading
import time

import pytest

from storage.aliases import history, move_alias
from storage.registry import push
from tests.serving import PROMPT, REPLICA_START_S, board_reports, deployed, metric, post, wait_for
from vidgen.model import VideoDiT
from vidgen.pipelines.packages import load_package, save_model
from vidgen.pipelines.references import resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(ray_cluster, micro_model_dir, tmp_path_factory):
    """A registry holding v1 (the shipped model), v2 (the micro model) and v3 (untrained weights); edge serves
    `shapes@production` (v1), cloud `shapes@canary`, forced from v1 to the broken v3, with a quality probe that
    may roll it back."""
    tmp = tmp_path_factory.mktemp("serve-alias")
    registry = tmp / "registry"
    shipped = load_package(resolve_model("shapes-tiny"))
    broken = save_model(VideoDiT(shipped.model.config), tmp / "broken", card="untrained\n",
                        extra={"sampler": shipped.config["sampler"]})
    for folder in (shipped.folder, micro_model_dir[0], broken):
        push(folder, f"{registry}/shapes")
    move_alias(f"{registry}/shapes", "production", "v1", "first release")
    move_alias(f"{registry}/shapes", "canary", "v1", "first release", passed_gate=True)  # where a rollback may go
    move_alias(f"{registry}/shapes", "canary", "v3", "forced past the gate on purpose")
    args = {
        "renders_uri": str(tmp / "renders"),
        "tiers": {
            "edge": {"model": f"{registry}/shapes@production", "alias_poll_s": 0.5, "steps": 2, "cost_per_clip": 1,
                     "num_cpus": 0.5, "resources": {"edge": 1}, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
            "cloud": {"model": f"{registry}/shapes@canary", "alias_poll_s": 0.5, "steps": 4, "cost_per_clip": 10,
                      "quality_probe": {"every": 1, "window": 6, "min_probes": 4, "min_quality": 0.3,
                                        "rollback": True},
                      "num_cpus": 0.5, "resources": {"cloud": 1},
                      "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        },
    }
    with deployed(tmp, args) as (base, cfg):
        yield base, registry


def test_an_alias_move_reaches_the_tier_with_no_failed_request(server):
    base, registry = server
    first = post(base, {"prompt": PROMPT, "quality": "draft"})
    assert first.status_code == 200 and first.headers["X-Vidgen-Model"].startswith("shapes@v1#")
    seen, failures, stop = [], [], threading.Event()

    def load():
        while not stop.is_set():
            response = post(base, {"prompt": PROMPT, "quality": "draft"})
            if response.status_code != 200:
                failures.append((response.status_code, response.text[:200]))
            else:
                seen.append((time.monotonic(), response.headers["X-Vidgen-Model"]))

    clients = [threading.Thread(target=load) for _ in range(2)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: len(seen) >= 4, 30, "requests on v1")
        moved_at = time.monotonic()
        move_alias(f"{registry}/shapes", "production", "v2", "the micro model")
        wait_for(lambda: any(m.startswith("shapes@v2#") for _, m in seen), REPLICA_START_S,
                 "a clip from v2")
        time.sleep(1)  # and a little after the swap
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert failures == []
    models = [m.split("#")[0] for _, m in seen]
    swap = models.index("shapes@v2")
    # one swap, no flapping (a v1 clip may still be on its way back while the first v2 one arrives)
    assert set(models[:swap]) == {"shapes@v1"} and "shapes@v1" not in models[swap + 2:] and models[-1] == "shapes@v2"
    first_v2 = next(t for t, m in seen if m.startswith("shapes@v2#"))
    assert first_v2 - moved_at < 30


def test_a_tier_whose_clips_regress_rolls_its_alias_back(server):
    base, registry = server
    prompts = ["a red square moving right", "a green circle moving down", "a blue triangle moving left",
               "a yellow square moving up", "a cyan circle moving right", "a magenta triangle moving down"]
    seen, failures = [], []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(m.startswith("shapes@v1#") for m in seen[-1:]):
        response = post(base, {"prompt": prompts[len(seen) % len(prompts)], "quality": "high", "seed": len(seen)})
        if response.status_code != 200:
            failures.append((response.status_code, response.text[:200]))
            continue
        assert response.headers["X-Vidgen-Tier"] == "cloud"
        seen.append(response.headers["X-Vidgen-Model"])
    assert failures == []
    assert seen[0].startswith("shapes@v3#") and seen[-1].startswith("shapes@v1#")  # broken, then rolled back
    last = history(f"{registry}/shapes", "canary")[-1]
    assert (last.kind, last.version, last.previous) == ("automatic-rollback", "v1", "v3")
    assert last.by.startswith("vidgen serving: tier cloud, replica ")
    assert "rolling prompt accuracy" in last.reason and "shapes@v3" in last.reason
    # the replica reports the swap too (its reports run every 0.25 s: the board may still hold an older one)
    wait_for(lambda: [r for r in board_reports() if r.tier == "cloud"
                      and r.serves.label.startswith("shapes@v1#")], 10, "the cloud replica to report v1")
    # and Ray's metrics endpoint says so: the rollback, the probes, the prompts the drift monitor scored
    assert wait_for(lambda: metric("ray_vidgen_automatic_rollbacks_total").get(("cloud", None)), 60,
                    "the rollback counter to be exported") == 1
    assert ("cloud", "false") in metric("ray_vidgen_prompts_total")
