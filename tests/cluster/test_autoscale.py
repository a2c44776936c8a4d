"""`vidgen cluster scale` and `status` against the real autoscaler with cluster/local.yaml's simulated nodes."""

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cluster.launcher import read_config

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_scale_adds_nodes_of_the_right_type_and_reset_lets_them_go(ray_head_class, tmp_path):
    config = read_config(ROOT / "cluster" / "local.yaml")
    head = ray_head_class(tmp_path, num_cpus=1, autoscaling_config=config)

    def vidgen(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "vidgen.cli", "cluster", *args, "--address", head.gcs_address],
                             env=head.env, capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    def nodes() -> dict[str, int]:
        line = next(line for line in vidgen("status").splitlines() if line.startswith("nodes:"))
        return {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", line)}

    def wait_for_nodes(wanted: dict[str, int], timeout_s: float) -> None:
        deadline, seen = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            seen = nodes()
            if seen == wanted:
                return
            time.sleep(1)
        raise AssertionError(f"nodes {seen}, wanted {wanted}")

    try:
        assert nodes() == {"head": 1}
        assert "asked" in vidgen("scale", "--edge", "2")
        wait_for_nodes({"head": 1, "edge_cpu": 2}, 90)  # the autoscaler launched two edge_cpu, no cloud_gpu
        status = vidgen("status")
        assert re.search(r"edge 0/2", status), status
        assert "cleared" in vidgen("scale", "--reset")
        wait_for_nodes({"head": 1}, 120)  # idle for idle_timeout_minutes (6 s), then terminated
    finally:
        head.stop()


def test_cluster_up_status_down_on_this_machine(tmp_path):
    import json
    import os

    import psutil

    from cluster.launcher import free_ports, stop_local

    gcs, dashboard = free_ports(2)
    # A home of its own: the state file and the token `ray start` writes land there, not in the user's.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "VIDGEN_HOME"))}, "HOME": str(tmp_path)}
    state_file = tmp_path / ".vidgen" / "local-cluster.json"

    def vidgen(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "vidgen.cli", *args], env=env, capture_output=True, text=True,
                             timeout=180, cwd=ROOT)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    local = str(ROOT / "cluster" / "local.yaml")
    up = vidgen("cluster", "up", "--config", local, "--port", str(gcs), "--dashboard-port", str(dashboard))
    state = json.loads(state_file.read_text())
    try:
        assert "vidgen-local is up" in up and f"http://127.0.0.1:{dashboard}" in up
        status = vidgen("cluster", "status")  # finds the cluster `up` recorded
        assert f"cluster at 127.0.0.1:{gcs}" in status and "nodes:     1 head" in status
        assert "no jobs" in vidgen("jobs", "list", "--address", f"http://127.0.0.1:{dashboard}")
        assert "stopped" in vidgen("cluster", "down", "--config", local)
    finally:
        if state_file.exists():
            stop_local(state["temp_dir"])
    assert not state_file.exists()
    left = [p for p in psutil.process_iter(["cmdline"]) if state["temp_dir"] in " ".join(p.info["cmdline"] or [])]
    assert not left, left
