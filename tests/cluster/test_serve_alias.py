"""A serving tier that names its model by an alias follows it without a redeploy: under a steady load, the alias
moves to another version, the replica loads it beside the old one and swaps between batches, and no request fails.
"""

import threading
import time

import pytest

from storage.aliases import move_alias
from storage.registry import push
from tests.serving import PROMPT, deployed, post, wait_for
from vidgen.runtime.references import resolve_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(ray_cluster, micro_model_dir, tmp_path_factory):
    """edge: `shapes@production` in a registry holding v1 (the shipped model) and v2 (the micro model)."""
    tmp = tmp_path_factory.mktemp("serve-alias")
    registry = tmp / "registry"
    push(resolve_model("shapes-tiny"), f"{registry}/shapes")
    push(micro_model_dir[0], f"{registry}/shapes")
    move_alias(f"{registry}/shapes", "production", "v1", "first release")
    args = {
        "renders_uri": str(tmp / "renders"),
        "tiers": {
            "edge": {"model": f"{registry}/shapes@production", "alias_poll_s": 0.5, "steps": 2, "cost_per_clip": 1,
                     "num_cpus": 0.5, "resources": {"edge": 1}, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
            "cloud": {"steps": 2, "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1},
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
        wait_for(lambda: any(m.startswith("shapes@v2#") for _, m in seen), 60, "a clip from v2")
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
