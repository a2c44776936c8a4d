"""The work budget and the retry after a replica death, through the deployed application on a real local Ray cluster:
a request over a tier's budget is not placed there (400 naming the budget when no tier takes it), and a render larger
than its tier's default clip whose replica dies under it is answered 503, not sent on to the next replica."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serving import PROMPT, REPLICA_START_S, board_reports, deployed, post, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(ray_cluster, tmp_path_factory):
    """(base URL, ServeConfig): edge renders 2 steps and takes at most 4, cloud renders 4 and takes at most 6."""
    tmp = tmp_path_factory.mktemp("serve-budget")
    args = {
        "renders_uri": str(tmp / "jobs"),
        "limits": {"max_steps": 8},
        "policy": {"overload_queue_per_replica": 50},
        "tiers": {
            "edge": {"steps": 2, "cost_per_clip": 1, "num_cpus": 0.5, "resources": {"edge": 1},
                     "work_budget": {"max_steps": 4}, "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
            "cloud": {"steps": 4, "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1},
                      "max_ongoing_requests": 4, "work_budget": {"max_steps": 6},
                      "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        },
    }
    with deployed(tmp, args) as server:
        yield server


def test_a_request_over_a_tiers_budget_goes_elsewhere_or_is_refused_naming_the_budget(server):
    base, _ = server
    over_edge = post(base, {"prompt": PROMPT, "steps": 5})
    assert over_edge.status_code == 200, over_edge.text
    assert over_edge.headers["X-Vidgen-Tier"] == "cloud"  # the cheaper edge tier's budget does not admit it
    over_both = post(base, {"prompt": PROMPT, "steps": 8})
    assert over_both.status_code == 400, over_both.text
    error = over_both.json()["error"]
    assert error["param"] == "steps"
    assert "steps: edge: steps=8 is over the tier's work budget (work_budget.max_steps 4)" in error["message"]
    assert "steps: cloud: steps=8 is over the tier's work budget (work_budget.max_steps 6)" in error["message"]


def test_a_render_larger_than_the_default_is_not_retried_after_its_replica_died(server):
    import ray

    base, _ = server
    answers: list[requests.Response] = []
    killed = []

    def load(worker: int) -> None:  # until the kill: the cloud replica is always rendering when it comes
        for i in range(200):
            if killed:
                return
            # 6 steps > the cloud's default 4: a clip its replicas did not render when they loaded
            answers.append(post(base, {"prompt": PROMPT, "quality": "high", "steps": 6, "seed": 1000 * worker + i},
                                timeout=REPLICA_START_S))

    with ThreadPoolExecutor(4) as pool:
        loading = [pool.submit(load, worker) for worker in range(4)]
        wait_for(lambda: len(answers) >= 4, 60, "the load to start")
        victim = wait_for(lambda: next((r for r in board_reports() if r.tier == "cloud" and r.held), None), 60,
                          "the cloud replica holding requests")
        ray.kill(ray.get_actor(victim.actor_name, namespace="serve"), no_restart=True)
        killed.append(victim.replica)
        for done in loading:
            done.result()
    refusals = [(a.status_code, a.text) for a in answers if a.status_code != 200]
    assert {code for code, _ in refusals} <= {503}, refusals
    # 503 either for a render cut by the kill, or while no cloud replica reports (not for a retry that failed too)
    died = [text for _, text in refusals if "died during the render" in text]
    assert died, f"no render was cut by the kill: {len(answers) - len(refusals)} answered 200, then {refusals}"
    assert all("not retried" in detail for detail in died), died
    wait_for(lambda: any(r.tier == "cloud" and r.replica not in killed for r in board_reports()), REPLICA_START_S,
             "a replacement cloud replica")
    # the replacement serves once the router sees it healthy (a report or two after it starts)
    wait_for(lambda: post(base, {"prompt": PROMPT, "quality": "high", "steps": 6}).status_code == 200,
             REPLICA_START_S, "a render on the replacement replica")
