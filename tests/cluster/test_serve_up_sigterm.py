"""Issue 29, item 4: `vidgen serve up` in the foreground, stopped with SIGTERM (what `kill` and process managers
send), stops as Ctrl-C does: no stack dump, one "stopped" line, exit status 0, and no process of the Ray it started
left (Ray's DashboardAgent and RuntimeEnvAgent ignore SIGTERM). Run from a folder that is not the repository's, with
the shipped config's content on a free port."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import requests
import yaml

from cluster.launcher import free_ports
from cluster.serve_config import deploy_file_path
from tests.serving import DEPLOY_S, wait_for


@pytest.mark.slow
def test_sigterm_stops_serve_up_and_every_process_of_its_ray(tmp_path):
    port = free_ports(1)[0]
    deploy = yaml.safe_load(deploy_file_path("local").read_text())
    deploy["http_options"]["port"] = port
    deploy["applications"][0]["args"]["renders_uri"] = str(tmp_path / "renders")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(deploy))
    log = open(tmp_path / "console.txt", "w+")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    up = subprocess.Popen([sys.executable, "-m", "vidgen.cli", "serve", "up", "--config", "serve.yaml",
                           "--insecure-local"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "serving in the foreground" in (tmp_path / "console.txt").read_text() or up.poll() is not None,
                 DEPLOY_S, "serve up to deploy", explain=lambda: (tmp_path / "console.txt").read_text()[-2000:])
        assert up.poll() is None, (tmp_path / "console.txt").read_text()
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        ray_processes = psutil.Process(up.pid).children(recursive=True)
        names = {p.name() for p in ray_processes if p.is_running()}
        assert any("raylet" in n for n in names), names
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 0
    finally:
        if up.poll() is None:
            up.kill()
    console = (tmp_path / "console.txt").read_text()
    assert "SIGTERM received" not in console and "Traceback" not in console, console[-3000:]
    assert console.count("stopped: Serve and the local Ray this command started are shut down") == 1, console[-3000:]
    time.sleep(1)
    left = [p for p in ray_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(p.pid, p.name()) for p in left]
