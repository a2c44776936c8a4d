"""Helpers of the serving tests: deploy an application with `vidgen serve up` on the session's Ray cluster, wait for
conditions, post requests, read the replicas' reports."""

import time
from contextlib import contextmanager

import requests

from cluster.launcher import free_ports
from cluster.tier_report import TierReport

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = "a red square moving right"
# Deadline for a new replica to come up (or a replica to load a model's next version): a new replica's process,
# imports, model, cached drift reference and warm-up clip take ~5 s here idle and ~6 s with four clients loading the
# other replica (benchmarks/replica_start.py; 36 s before issue 28), and CI machines have run twice as slow as this
# one while the rest of the suite loads them.
REPLICA_START_S = 60
# Deadline for `vidgen serve up` to start its own Ray and deploy the whole app (four deployments, both tiers' models).
DEPLOY_S = 180


def wait_for(predicate, timeout_s: float, what: str, every_s: float = 0.25, explain=None):
    """The first truthy value of `predicate()` within `timeout_s`; otherwise an AssertionError naming `what`, and what
    `explain()` says about the state it was left in."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}" + (f": {explain()}" if explain else ""))


@contextmanager
def deployed(tmp, args: dict, replicas: str = "1 edge replica(s), 1 cloud replica(s)"):
    """(base URL, ServeConfig) of the application `args` deployed by `vidgen serve up --config FILE --address
    auto` on 127.0.0.1; deleted, and Serve shut down, afterwards."""
    import yaml
    from ray import serve
    from typer.testing import CliRunner

    from cluster.serve_config import read_deploy_file
    from vidgen.cli import app

    port = free_ports(1)[0]
    config = tmp / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [{"name": "vidgen", "route_prefix": "/", "import_path": "cluster.serve_app:build_app",
                          "args": args}]}))
    runner = CliRunner()
    result = runner.invoke(app, ["serve", "up", "--config", str(config), "--address", "auto"],
                           env={"VIDGEN_SERVE_TOKEN": TOKEN})
    base = f"http://127.0.0.1:{port}"
    assert result.exit_code == 0, result.output
    assert f"vidgen is up at {base}" in result.output and replicas in result.output
    wait_for(lambda: requests.get(f"{base}/healthz", timeout=5).json()["status"] == "ok", 30, "the router")
    try:
        yield base, read_deploy_file(config)[1]
    finally:
        result = runner.invoke(app, ["serve", "down", "--address", "auto"])
        assert result.exit_code == 0 and "vidgen deleted" in result.output, result.output
        serve.shutdown()


def board_reports() -> list[TierReport]:
    """The replicas' fresh reports, as the router reads them."""
    from ray import serve

    return serve.get_deployment_handle("TierBoard", app_name="vidgen").snapshot.remote().result()


def post(base: str, body: dict, headers=AUTH, timeout=60) -> requests.Response:
    """POST /v1/videos/sync: the clip's MP4 in the answer."""
    return requests.post(f"{base}/v1/videos/sync", json=body, headers=headers, timeout=timeout)


def metric(name: str) -> dict[tuple, float]:
    """One metric from this node's Prometheus endpoint (Ray's metrics agent): {(tier, outcome/spilled/ood): value}."""
    import re

    import ray

    port = ray._private.worker.global_worker.node.metrics_export_port
    values: dict[tuple, float] = {}
    for line in requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) + 1:line.rindex("}")]))
            key = (labels.get("tier"), labels.get("outcome", labels.get("spilled", labels.get("ood"))))
            values[key] = values.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return values
