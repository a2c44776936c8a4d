"""Starting, resizing, inspecting and stopping a cluster with Ray's own machinery.

* `up` / `down`: Ray's cluster launcher (`ray.autoscaler.sdk.create_or_update_cluster`, `teardown_cluster`) for a
  cloud config such as cluster.yaml. A `fake_multinode` config (cluster/local.yaml) cannot go through the launcher
  in Ray 2.60 (its defaults file is missing from the wheel), so `up` starts a head on this machine with the real
  autoscaler reading that config, which then starts and stops simulated nodes; `down` stops that head's processes
  (found by its own temp dir) by PID.
* `scale`: `ray.autoscaler.sdk.request_resources`, a standing request the autoscaler satisfies (or clears).
* `status`: nodes by type, resources used of total, and the demands the autoscaler has not met yet.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from storage.user_state import local_cluster_state

log = logging.getLogger(__name__)

# The custom resources vidgen's node types carry, and the type each one marks (cluster.yaml, cluster/local.yaml).
TYPE_BY_RESOURCE = {"edge": "edge_cpu", "cloud": "cloud_gpu"}


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on loopback right now."""
    import socket

    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def read_config(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cluster config {path} does not exist; start from cluster.yaml or cluster/local.yaml")
    config = yaml.safe_load(path.read_text()) or {}
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        if key not in config:
            raise ValueError(f"{path}: no `{key}`; it is not a Ray cluster launcher config")
    return config


def is_local(config: dict) -> bool:
    return config["provider"].get("type") == "fake_multinode"


def local_autoscaling_config(config: dict, gcs_address: str, folder: str | Path) -> Path:
    """The fake-multinode config with the head's GCS address filled in (its simulated nodes dial it)."""
    resolved = {**config, "provider": {**config["provider"], "gcs_address": gcs_address}}
    path = Path(folder) / "autoscaling.yaml"
    path.write_text(yaml.safe_dump(resolved))
    return path


def local_head_environment() -> dict[str, str]:
    """What the head needs for the fake provider: RAY_FAKE_CLUSTER, and a quick autoscaler loop."""
    return {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}


def up(path: str | Path, port: int = 6379, dashboard_port: int = 8265) -> dict:
    """Start or update the cluster; returns where to reach it."""
    config = read_config(path)
    if not is_local(config):
        from ray.autoscaler.sdk import create_or_update_cluster

        # no_restart: a running head keeps its Ray (and its jobs and Serve apps); setup commands still rerun, and
        # start commands run only on new nodes, so they never need to stop a Ray first.
        create_or_update_cluster(str(path), no_restart=True, restart_only=False, no_config_cache=True)
        return {"cluster": config["cluster_name"], "provider": config["provider"]["type"]}
    temp_dir = tempfile.mkdtemp(prefix="vidgen-local-", dir="/tmp")
    gcs_address = f"127.0.0.1:{port}"
    autoscaling = local_autoscaling_config(config, gcs_address, temp_dir)
    head_cpus = config["available_node_types"][config["head_node_type"]]["resources"].get("CPU", 0)
    # Every other port free, so a second Ray on this machine (or a test's) is never in the way.
    client, agent_http, agent_grpc, runtime_env, metrics, node_manager, object_manager = free_ports(7)
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}",
               f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent_http}",
               f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={runtime_env}",
               f"--metrics-export-port={metrics}", f"--node-manager-port={node_manager}",
               f"--object-manager-port={object_manager}", "--min-worker-port=0", "--max-worker-port=0",
               f"--num-cpus={head_cpus}", f"--temp-dir={temp_dir}", f"--autoscaling-config={autoscaling}",
               "--disable-usage-stats"]
    result = subprocess.run(command, env={**os.environ, **local_head_environment()}, capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ray start failed: {result.stderr.strip().splitlines()[-1:]}")
    state = {"cluster": config["cluster_name"], "gcs_address": gcs_address, "temp_dir": temp_dir,
             "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    local_cluster_state().parent.mkdir(parents=True, exist_ok=True)
    local_cluster_state().write_text(json.dumps(state, indent=2))
    return state


def stop_local(temp_dir: str) -> int:
    """Stop the processes of the head started with `temp_dir` (unique to it; every one of its processes, the
    simulated nodes' included, names it on its command line) and their children, by PID; then remove the folder."""
    import shutil

    import psutil

    mine: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if temp_dir in " ".join(proc.info["cmdline"] or []):
                for p in [proc, *proc.children(recursive=True)]:
                    mine[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # it ended while we looked
            continue
    for proc in mine.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(mine.values()), timeout=5)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(mine)


def down(path: str | Path) -> str:
    config = read_config(path)
    if not is_local(config):
        from ray.autoscaler.sdk import teardown_cluster

        teardown_cluster(str(path))
        return f"{config['cluster_name']} torn down"
    state_file = local_cluster_state()
    if not state_file.is_file():
        raise RuntimeError(f"no local cluster recorded in {state_file}; nothing to stop")
    state = json.loads(state_file.read_text())
    stopped = stop_local(state["temp_dir"])
    state_file.unlink()
    return f"{state['cluster']} stopped ({stopped} processes)"


def bundles(cpus: int = 0, gpus: int = 0, edge: int = 0, cloud: int = 0) -> list[dict]:
    """Resource bundles for a standing request: one per CPU, GPU, edge or cloud slot asked for."""
    return ([{"CPU": 1}] * cpus + [{"GPU": 1}] * gpus + [{"CPU": 1, "edge": 1}] * edge
            + [{"CPU": 1, "cloud": 1}] * cloud)


def scale(cpus: int = 0, gpus: int = 0, edge: int = 0, cloud: int = 0, reset: bool = False) -> list[dict]:
    """Ask the autoscaler to keep capacity for these bundles (replacing any earlier request); reset clears it."""
    from ray.autoscaler.sdk import request_resources

    wanted = [] if reset else bundles(cpus, gpus, edge, cloud)
    request_resources(bundles=wanted)
    return wanted


def _node_type(node: dict) -> str:
    resources = node.get("Resources", {})
    if "node:__internal_head__" in resources:
        return "head"
    for resource, node_type in TYPE_BY_RESOURCE.items():
        if resource in resources:
            return node_type
    return "worker"


def status() -> dict:
    """Nodes by type, resources used of total, and the autoscaler's unmet demands (from its last report)."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_get

    nodes: dict[str, int] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            nodes[_node_type(node)] = nodes.get(_node_type(node), 0) + 1
    total, available = ray.cluster_resources(), ray.available_resources()
    resources = {k: (total[k] - available.get(k, 0), total[k]) for k in sorted(total)
                 if not k.startswith(("node:", "object_store_memory", "memory", "accelerator_type"))}
    report = _internal_kv_get("__autoscaling_status")
    pending: dict = {"autoscaler": "not reporting (a cluster without an autoscaler)"}
    if report:
        data = json.loads(report)
        metrics, autoscaler = data.get("load_metrics_report", {}), data.get("autoscaler_report", {})
        pending = {"launching": autoscaler.get("pending_launches", {}),
                   "resource_demand": metrics.get("resource_demand", []),
                   "requested": metrics.get("request_demand", [])}
    return {"nodes": nodes, "resources": resources, "pending": pending}
