"""Starting, resizing, inspecting and stopping a cluster with Ray's own machinery.

* `up` / `down`: Ray's cluster launcher (`ray.autoscaler.sdk.create_or_update_cluster`, `teardown_cluster`) for a
  cloud config such as cluster.yaml. A `fake_multinode` config (cluster/local.yaml) cannot go through the launcher
  in Ray 2.60 (its defaults file is missing from the wheel), so `up` starts a head on this machine with the real
  autoscaler reading that config, which then starts and stops simulated nodes; `down` stops that head's processes
  by PID: those `up` recorded (PID and start time) and their children, and processes of this user whose arguments
  name a path inside the head's own temp dir (the simulated nodes the autoscaler started later). The state file
  is not trusted: `down` touches only a temp dir of the form `up` creates, owned by this user.
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
LOCAL_TEMP_PREFIX = "vidgen-local-"  # the local heads' temp dirs: /tmp/vidgen-local-XXXXXXXX (short: socket paths)

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


# The cluster configs shipped inside this package (package data), by name: `vidgen cluster up --config local`.
SHIPPED_CLUSTER_CONFIGS = {"local": "local.yaml"}


def config_path(config: str | Path) -> Path:
    """A cluster launcher config: a path, or the name of a shipped one, found in the installed package whatever the
    working directory."""
    path = Path(config)
    if path.is_file():
        return path
    if str(config) in SHIPPED_CLUSTER_CONFIGS:
        return Path(__file__).resolve().parent / SHIPPED_CLUSTER_CONFIGS[str(config)]
    raise FileNotFoundError(f"cluster config {config} is neither a file nor a shipped config "
                            f"({', '.join(SHIPPED_CLUSTER_CONFIGS)}); pass --config local for simulated nodes on this "
                            "machine, or your own copy of the repository's cluster.yaml for a cloud")


def read_config(path: str | Path) -> dict:
    path = config_path(path)
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
    path, config = config_path(path), read_config(path)
    if not is_local(config):
        from ray.autoscaler.sdk import create_or_update_cluster

        # no_restart: a running head keeps its Ray (and its jobs and Serve apps); setup commands still rerun, and
        # start commands run only on new nodes, so they never need to stop a Ray first.
        create_or_update_cluster(str(path), no_restart=True, restart_only=False, no_config_cache=True)
        return {"cluster": config["cluster_name"], "provider": config["provider"]["type"]}
    temp_dir = tempfile.mkdtemp(prefix=LOCAL_TEMP_PREFIX, dir="/tmp")
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
             "dashboard": f"http://127.0.0.1:{dashboard_port}", "processes": _processes_of(temp_dir)}
    local_cluster_state().parent.mkdir(parents=True, exist_ok=True)
    local_cluster_state().write_text(json.dumps(state, indent=2))
    return state


def _names_path_inside(cmdline: list[str], folder: str) -> bool:
    """Whether an argument is a path inside `folder` (whole argument, or the value of a `--flag=`), not merely a
    string that contains it."""
    inside = folder.rstrip("/") + "/"
    return any(arg == folder or arg.startswith(inside) or ("=" in arg and
               (arg.split("=", 1)[1] == folder or arg.split("=", 1)[1].startswith(inside))) for arg in cmdline)


def _processes_of(temp_dir: str) -> list[dict]:
    """This user's processes whose arguments name a path inside `temp_dir`: {pid, started} (psutil create_time)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "uids", "create_time"]):
        try:
            if proc.info["uids"].real == os.getuid() and _names_path_inside(proc.info["cmdline"] or [], temp_dir):
                found.append({"pid": proc.pid, "started": proc.info["create_time"]})
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):  # it ended while we looked
            continue
    return found


def stop_local(temp_dir: str, recorded: list[dict] = ()) -> int:
    """Stop, by PID, the processes of this user whose arguments name a path inside `temp_dir`, found now or
    `recorded` by `up` (still the same process: same start time), and all their children; then remove `temp_dir`."""
    import shutil

    import psutil

    mine: dict[int, psutil.Process] = {}
    for entry in [*recorded, *_processes_of(temp_dir)]:
        try:
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["started"])) > 0.01:  # the PID was reused by another process
                continue
            if proc.uids().real != os.getuid() or not _names_path_inside(proc.cmdline(), temp_dir):
                continue  # a recorded PID is believed only for a process of ours that names our temp dir
            for p in [proc, *proc.children(recursive=True)]:
                mine[p.pid] = p
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):  # gone, or not an entry
            continue
    stop_processes(list(mine.values()))
    shutil.rmtree(temp_dir, ignore_errors=True)
    return len(mine)


def stop_processes(processes: list, grace_s: float = 5.0) -> int:
    """SIGTERM each psutil.Process still running (psutil refuses a PID reused since), SIGKILL those alive after
    `grace_s` (Ray's DashboardAgent and RuntimeEnvAgent ignore SIGTERM); returns how many needed SIGKILL."""
    import psutil

    for proc in processes:
        try:
            proc.terminate()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return len(alive)


def descendants() -> list:
    """Every process this one started, and theirs (psutil.Process, which remembers each one's start time): a local
    Ray's GCS, raylet, dashboard, and the raylet's agents and workers."""
    import psutil

    return psutil.Process().children(recursive=True)


def _launcher_temp_dir(recorded: str) -> str:
    """The temp dir a state file names, if it is one `up` could have made and this user owns; else RuntimeError."""
    path = Path(recorded)
    ok = (path.parent == Path("/tmp") and path.name.startswith(LOCAL_TEMP_PREFIX) and path.is_dir()
          and not path.is_symlink() and path.stat().st_uid == os.getuid())
    if not ok:
        raise RuntimeError(f"the local cluster state names temp_dir {recorded!r}, which is not a folder `vidgen "
                           f"cluster up` made (/tmp/{LOCAL_TEMP_PREFIX}*, owned by you); refusing to stop processes "
                           f"or remove anything: stop that cluster by hand and delete {local_cluster_state()}")
    return str(path)


def down(path: str | Path) -> str:
    path, config = config_path(path), read_config(path)
    if not is_local(config):
        from ray.autoscaler.sdk import teardown_cluster

        teardown_cluster(str(path))
        return f"{config['cluster_name']} torn down"
    state_file = local_cluster_state()
    if not state_file.is_file():
        raise RuntimeError(f"no local cluster recorded in {state_file}; nothing to stop")
    state = json.loads(state_file.read_text())
    stopped = stop_local(_launcher_temp_dir(state["temp_dir"]), state.get("processes", []))
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
