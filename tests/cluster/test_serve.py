"""The serving application on a real local Ray cluster with `edge` and `cloud` resources, over HTTP on 127.0.0.1.

One deployment for the module (deploying loads both tiers' models): placement seen from the replicas, auth, limits,
asynchronous renders, the Videos API through the official openai SDK (`videos_sdk_checks`), an OpenAPI fuzz,
autoscaling of the edge tier up and down, and a replica killed under load.
"""

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.cluster.serve_page_checks import (  # noqa: F401 (collected here, on this module's deployment)
    test_sdk_downloads_a_spritesheet_of_the_videos_frames,
    test_the_playground_renders_a_prompt_into_a_playing_video_and_deletes_it,
)
from tests.cluster.videos_sdk_checks import (  # noqa: F401 (collected here, on this module's deployment)
    test_a_poll_of_a_running_render_is_held_until_it_ends,
    test_sdk_create_and_poll_ends_completed_and_downloads_the_asked_size,
    test_sdk_create_retried_with_its_idempotency_key_renders_once,
    test_sdk_delete_stops_a_running_render_early_and_a_queued_one_never_runs,
    test_sdk_errors_carry_the_param_and_the_right_exception,
    test_sdk_lists_the_callers_videos_across_pages,
)
from tests.serving import AUTH, PROMPT, REPLICA_START_S, TOKEN, board_reports, deployed, metric, post, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(ray_cluster, tmp_path_factory):
    """(base URL, ServeConfig) of the application deployed by `vidgen serve up --config FILE --address auto`."""
    tmp = tmp_path_factory.mktemp("serve")
    fast_scaling = {"metrics_interval_s": 0.5, "look_back_period_s": 2, "upscale_delay_s": 1,
                    "downscale_delay_s": 3}
    args = {
        "renders_uri": str(tmp / "jobs"),
        # 200 steps: a cloud render long enough to be deleted while it runs
        "limits": {"max_prompt_chars": 120, "max_steps": 200, "body_timeout_s": 1.5},
        "async_lease_s": 2,
        "policy": {"overload_queue_per_replica": 50},
        "tiers": {
            "edge": {"int8": True, "steps": 2, "cost_per_clip": 1, "num_cpus": 0.5, "resources": {"edge": 1},
                     "regions": ["eu", "us"],
                     "max_ongoing_requests": 2,
                     "autoscaling": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
                                     **fast_scaling}},
            "cloud": {"steps": 4, "cost_per_clip": 10, "num_cpus": 0.5, "resources": {"cloud": 1}, "regions": ["eu"],
                      "work_budget": {"max_steps": 200},
                      "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        },
    }
    with deployed(tmp, args) as server:
        yield server


def running_replicas(deployment: str) -> int:
    return deployment_status(deployment)["replicas"].get("RUNNING", 0)


def deployment_status(deployment: str) -> dict:
    """{"status", "message", "replicas": {state: count}} of one deployment, as `vidgen serve status` shows it."""
    from cluster.deploy import status

    return status("vidgen")["deployments"][deployment]


def test_status_command_lists_the_deployments(server):
    from typer.testing import CliRunner

    from vidgen.cli import app

    result = CliRunner().invoke(app, ["serve", "status", "--address", "auto"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("vidgen: RUNNING")
    for deployment in ("Router", "TierBoard", "EdgeGenerator", "CloudGenerator"):
        assert f"{deployment}" in result.output
    assert "1 running" in result.output


def test_requests_land_on_the_tier_the_policy_names(server):
    from storage.video import decode

    base, _ = server
    seen = {}
    for quality, tier in (("draft", "edge"), ("standard", "edge"), ("high", "cloud")):
        response = post(base, {"prompt": PROMPT, "quality": quality})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "video/mp4"
        assert response.headers["X-Vidgen-Tier"] == tier
        assert "cheapest capable tier" in response.headers["X-Vidgen-Placement-Reason"]
        assert decode(response.content).shape == (8, 32, 32, 3)
        seen[response.headers["X-Vidgen-Replica"]] = tier
    # the replica that rendered belongs to that tier, holds its resource and counted the render (reports lag a little)
    replicas = wait_for(lambda: (r := {r.replica: r for r in board_reports()})
                        and all(id in r and r[id].rendered for id in seen) and r, 10, "the renders reported")
    for replica, tier in seen.items():
        assert replicas[replica].tier == tier
        assert replicas[replica].resources.get(tier) == 1
    models = requests.get(f"{base}/v1/models", headers=AUTH, timeout=10).json()
    assert models["object"] == "list" and {m["object"] for m in models["data"]} == {"model"}
    by_tier = {m["id"]: m for m in models["data"]}
    assert by_tier["edge"]["serves"]["int8"] and by_tier["edge"]["capabilities"]["steps"] == 2
    assert not by_tier["cloud"]["serves"]["int8"] and by_tier["cloud"]["capabilities"]["steps"] == 4
    assert by_tier["edge"]["capabilities"]["frames"]["default"] == 8 and by_tier["edge"]["seconds_per_clip"] > 0
    assert not {"steps", "guidance", "frames", "height", "width", "capabilities"} & set(by_tier["edge"]["serves"])


def test_metrics_count_requests_and_placements_per_tier(server):
    base, _ = server
    for quality in ("draft", "high"):
        assert post(base, {"prompt": PROMPT, "quality": quality}).status_code == 200
    requests_by_tier = wait_for(lambda: (m := metric("ray_vidgen_requests_total")).get(("edge", "done"))
                                and m.get(("cloud", "done")) and m, 60, "the request counters to be exported")
    assert requests_by_tier[("edge", "done")] >= 1 and requests_by_tier[("cloud", "done")] >= 1
    placements = metric("ray_vidgen_placements_total")
    assert placements.get(("edge", "false"), 0) >= 1 and placements.get(("cloud", "false"), 0) >= 1
    assert metric("ray_vidgen_request_latency_ms_count").get(("edge", None), 0) >= 1


def test_auth_limits_and_refusals_are_4xx_naming_the_field(server):
    base, _ = server
    assert post(base, {"prompt": PROMPT}, headers={}).status_code == 401
    assert post(base, {"prompt": PROMPT}, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert requests.get(f"{base}/v1/models", timeout=10).status_code == 401
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200  # load balancers need no token
    assert post(base, {"prompt": 5, "bogus": 1}, headers={}).status_code == 401  # before any validation detail
    for body in (b"{", b'{"prompt": ' + b"9" * 4301 + b"}", b"x" * 20_000):  # whatever the body: 401, never read
        assert requests.post(f"{base}/v1/videos", data=body, timeout=10).status_code == 401

    def refused(body, status=400):
        response = post(base, body)
        assert response.status_code == status, response.text
        return response.json()["error"]  # OpenAI's envelope: message, type, param, code

    assert post(base, {"prompt": PROMPT}, headers={}).json()["error"]["type"] == "authentication_error"
    assert refused({"prompt": "x" * 121})["param"] == "prompt"
    assert refused({"prompt": PROMPT, "steps": 201})["param"] == "steps"
    assert "8x32x32" in refused({"prompt": PROMPT, "frames": 64, "height": 32})["message"]
    assert refused({"prompt": PROMPT, "colour": "red"})["param"] == "colour"
    assert refused({"prompt": PROMPT, "seed": -1})["param"] == "seed"
    assert "tokens long" in refused({"prompt": "a " * 40})["message"]  # the text encoder's limit, from the replica
    assert "allow more time" in refused({"prompt": PROMPT, "latency_budget_ms": 1}, 422)["message"]
    big = requests.post(f"{base}/v1/videos", data=b"{" + b" " * 20_000 + b"}", headers=AUTH, timeout=10)
    assert big.status_code == 413
    chunks = iter([b'{"prompt": "', b"x" * 20_000, b'"}'])  # no Content-Length: counted as it arrives
    chunked = requests.post(f"{base}/v1/videos", data=chunks, headers={**AUTH, "Content-Type": "application/json"},
                            timeout=10)
    assert chunked.status_code == 413


def test_a_cut_or_trickled_body_never_reaches_a_render(server):
    base, _ = server
    rendered = sum(r.rendered for r in board_reports())
    chunks = iter([json.dumps({"prompt": PROMPT}).encode(), b" " * 20_000])  # valid JSON first, then too much
    response = requests.post(f"{base}/v1/videos", data=chunks, headers={**AUTH, "Content-Type": "application/json"},
                             timeout=30)
    assert response.status_code == 413
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:  # one byte, then nothing
        conn.sendall(f"POST /v1/videos HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{".encode())
        started = time.monotonic()
        answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 408") and time.monotonic() - started < 10
    time.sleep(1)  # replicas report every 0.25 s
    assert sum(r.rendered for r in board_reports()) == rendered


def test_a_reason_quoting_any_script_is_a_clean_451(server):
    base, _ = server
    response = post(base, {"prompt": PROMPT, "region": "東京"})  # the policy's reason quotes it in a header
    assert response.status_code == 451 and response.headers["X-Vidgen-Placement-Reason"].isascii()
    assert "\\u6771" in response.headers["X-Vidgen-Placement-Reason"]


def create(base: str, body: dict) -> requests.Response:
    """POST /v1/videos as JSON (the SDK's multipart is `videos_sdk_checks`')."""
    return requests.post(f"{base}/v1/videos", json=body, headers=AUTH, timeout=60)


def ended(base: str, video_id: str) -> dict:
    return wait_for(lambda: (v := requests.get(f"{base}/v1/videos/{video_id}", headers=AUTH, timeout=10).json())
                    ["status"] not in ("queued", "in_progress") and v, 60, f"video {video_id}")


def test_async_render_gives_the_same_clip_as_sync(server):
    base, cfg = server
    body = {"prompt": "a blue circle moving up", "seed": 7, "quality": "draft"}
    accepted = create(base, body)
    assert accepted.status_code == 200, accepted.text
    video = accepted.json()
    assert video["object"] == "video" and video["status"] == "queued" and video["tier"] == "edge"
    assert int(accepted.headers["openai-poll-after-ms"]) >= 20
    video = ended(base, video["id"])
    assert video["status"] == "completed" and video["progress"] == 100, video
    assert "video_url" not in video  # where the store keeps it is the operator's business
    assert (Path(cfg.renders_uri) / f"{video['id']}.mp4").is_file()
    clip = requests.get(f"{base}/v1/videos/{video['id']}/content", headers=AUTH, timeout=10)
    assert clip.headers["content-type"] == "video/mp4"
    assert clip.content == post(base, body).content  # deterministic sampler: the same bytes either way
    refused = create(base, {"prompt": "a " * 40}).json()  # accepted, then the encoder refuses it
    video = ended(base, refused["id"])
    assert video["status"] == "failed" and video["error"]["code"] == "prompt_rejected"
    assert video["error"]["message"].startswith("prompt:") and "tokens long" in video["error"]["message"]
    assert requests.get(f"{base}/v1/videos/{refused['id']}/content", headers=AUTH, timeout=10).status_code == 409
    assert requests.get(f"{base}/v1/videos/video_{'0' * 42}", headers=AUTH, timeout=10).status_code == 404
    assert requests.get(f"{base}/v1/videos/..%2Fsecret", headers=AUTH, timeout=10).status_code in (400, 404)


def test_openapi_fuzz_finds_no_server_error(server):
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    base, _ = server
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    assert {"/v1/videos", "/v1/videos/{video_id}", "/v1/videos/sync", "/v1/models", "/healthz"} \
        <= set(schema.raw_schema["paths"])
    calls = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def call(case):
            response = case.call(base_url=base, headers=AUTH, timeout=60)
            calls.append(response.status_code)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)

        call()
    assert len(calls) >= 40 and any(code == 400 for code in calls)


def test_edge_tier_scales_up_under_load_and_back_down(server):
    base, _ = server
    assert running_replicas("EdgeGenerator") == 1
    stop = threading.Event()
    codes = []

    def client(seed):
        while not stop.is_set():
            codes.append(post(base, {"prompt": PROMPT, "seed": seed, "quality": "draft"}).status_code)

    with ThreadPoolExecutor(4) as pool:
        for seed in range(4):
            pool.submit(client, seed)
        try:
            wait_for(lambda: running_replicas("EdgeGenerator") == 2, REPLICA_START_S, "a second edge replica",
                     explain=lambda: deployment_status("EdgeGenerator"))
            wait_for(lambda: sum(r.tier == "edge" for r in board_reports()) == 2, 30, "it to report")
        finally:
            stop.set()
    assert codes and set(codes) == {200}
    wait_for(lambda: running_replicas("EdgeGenerator") == 1, 60, "the edge tier to scale back down",
             explain=lambda: deployment_status("EdgeGenerator"))
    assert running_replicas("CloudGenerator") == 1


def test_replica_killed_under_load_loses_almost_nothing(server):
    import ray

    base, _ = server
    total, done = 120, []
    killed = []

    def one(i):
        response = post(base, {"prompt": PROMPT, "seed": i, "quality": "draft"})
        done.append(response.status_code)
        return response.status_code

    def kill_an_edge_replica():
        wait_for(lambda: len(done) >= 15, 60, "the load to start")
        victim = wait_for(lambda: next((r for r in board_reports() if r.tier == "edge" and r.held), None), 30,
                          "an edge replica holding requests")  # so the kill interrupts renders
        ray.kill(ray.get_actor(victim.actor_name, namespace="serve"), no_restart=True)
        killed.append(victim.replica)

    with ThreadPoolExecutor(4) as pool:
        killer = threading.Thread(target=kill_an_edge_replica)
        killer.start()
        codes = list(pool.map(one, range(total)))
        killer.join()
    assert killed, "no replica was killed"
    failures = sum(code != 200 for code in codes)
    assert failures <= total // 100, f"{failures} of {total} requests failed"
    wait_for(lambda: any(r.tier == "edge" and r.replica not in killed for r in board_reports()),
             REPLICA_START_S, "a replacement edge replica", explain=lambda: deployment_status("EdgeGenerator"))
    assert post(base, {"prompt": PROMPT, "quality": "draft"}).status_code == 200


def test_an_async_render_ends_within_a_lease_when_its_router_dies(server):
    import ray

    from cluster.async_renders import LAPSED

    base, _ = server
    ahead = ThreadPoolExecutor(3)  # three renders queued on the one cloud replica: the async one waits behind them
    for i in range(3):
        ahead.submit(lambda i=i: post(base, {"prompt": PROMPT, "quality": "high", "steps": 6, "seed": i}))
    time.sleep(0.3)
    accepted = create(base, {"prompt": PROMPT, "quality": "high", "steps": 6, "seed": 9})
    assert accepted.status_code == 200, accepted.text
    render_id = accepted.json()["id"]
    routers = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Router#" in a["name"]]
    assert routers
    for actor in routers:  # the router rendering it dies; Serve starts another
        ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
    ahead.shutdown(wait=True)  # those callers get errors: their router died

    def lapsed():
        try:
            response = requests.get(f"{base}/v1/videos/{render_id}", headers=AUTH, timeout=5)
        except requests.RequestException:
            return None
        return response.status_code == 200 and response.json()["status"] not in ("queued", "in_progress") \
            and response.json()

    video = wait_for(lapsed, 90, "the render to end")
    assert video["status"] == "failed" and video["error"] == {"code": "lease_lapsed", "message": LAPSED}
    wait_for(lambda: post(base, {"prompt": PROMPT, "quality": "draft"}).status_code == 200, REPLICA_START_S,
             "a new router")
