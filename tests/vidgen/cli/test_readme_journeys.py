"""Issue 29: README's journeys end to end, as a newcomer runs them: the `vidgen` command in a folder that is not the
repository's, with a VIDGEN_HOME of its own. Each asserts exit codes and outputs, and that the console shows vidgen's
progress, summaries and the log file's name, and none of Ray's, Serve's or the libraries' chatter (issue 29, item 3),
which is in that log file instead.

Each journey starts the local Ray a user's command starts (that startup is what prints most of the chatter), so they
cannot share the session's cluster; they run one at a time under the Ray lock like every Ray test."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from cluster.launcher import free_ports
from cluster.serve_config import deploy_file_path
from tests.serving import DEPLOY_S, wait_for

REPO = Path(__file__).resolve().parents[3]
CHATTER = ("Token authentication is enabled", "core_worker.cc", "constructor arguments in the object store",
           "Progress bars disabled", "execution finished in", "(ServeController pid=", "(ProxyActor pid=",
           "(ServeReplica:", "Connecting to existing Serve app", "Cannot deregister autoscaling state",
           "Failed to get queue length", "graceful_shutdown", "killed by `ray.kill`", "deepspeed_shm_comm_op",
           "torchao", "pytree", "\x1b[36m")
LOG_LINE = re.compile(r"Ray, Serve and library messages of this command: (\S+)")


def _env(home: Path) -> dict[str, str]:
    """A newcomer's environment: a home of their own, no cluster named, no Ray auth mode set by the tests."""
    drop = {"RAY_ADDRESS", "VIDGEN_REGISTRY", "VIDGEN_CACHE", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "VIDGEN_HOME": str(home),
            "VIDGEN_CACHE_HOME": str(home / "cache"), "HOME": str(home)}


def vidgen(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidgen.cli", *args], cwd=cwd, env=_env(cwd / "home"),
                          capture_output=True, text=True, timeout=timeout)


def assert_quiet(console: str) -> Path | None:
    """No chatter on the console; returns the log file it names (None when nothing was routed there)."""
    seen = [c for c in CHATTER if c in console]
    assert not seen, f"chatter on the console: {seen}\n{console[-3000:]}"
    assert "Traceback" not in console, console[-3000:]
    named = LOG_LINE.search(console)
    return Path(named.group(1)) if named else None


@pytest.mark.slow
def test_render_then_serve_up_request_and_sigterm_are_quiet(tmp_path):
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "manifest.jsonl", tmp_path / "examples")

    render = vidgen(tmp_path, "render", "examples/manifest.jsonl", "--out", "out/demo", "--preview")
    console = render.stdout + render.stderr
    assert render.returncode == 2, console  # the example manifest has two bad rows on purpose
    assert "24 rendered now" in console and "2 not rendered" in console
    assert len(list((tmp_path / "out" / "demo" / "videos").glob("*.mp4"))) == 24
    assert (tmp_path / "out" / "demo" / "preview.png").is_file()
    log = assert_quiet(console)
    assert log is not None and log.parent == tmp_path / "home" / "logs"
    logged = log.read_text()
    assert "Token authentication is enabled" in logged and "constructor arguments in the object store" in logged

    port = free_ports(1)[0]  # the shipped local config, on a port no other test holds
    deploy = yaml.safe_load(deploy_file_path("local").read_text())
    deploy["http_options"]["port"] = port
    deploy["applications"][0]["args"]["renders_uri"] = str(tmp_path / "renders")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(deploy))
    console_file = tmp_path / "serve-console.txt"
    with open(console_file, "w") as sink:
        up = subprocess.Popen([sys.executable, "-m", "vidgen.cli", "serve", "up", "--config", "serve.yaml",
                               "--insecure-local"], cwd=tmp_path, env=_env(tmp_path / "home"), stdout=sink,
                              stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "serving in the foreground" in console_file.read_text() or up.poll() is not None,
                 DEPLOY_S, "serve up to deploy", explain=lambda: console_file.read_text()[-2000:])
        clip = requests.post(f"http://127.0.0.1:{port}/v1/videos/sync", timeout=120,
                             json={"prompt": "a red square moving right", "quality": "draft"})
        assert clip.status_code == 200 and clip.content[4:8] == b"ftyp", clip.text[:300]
        time.sleep(1)  # the request's access log line reaches the driver
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 0, console_file.read_text()[-3000:]
    finally:
        if up.poll() is None:
            up.kill()
    console = console_file.read_text()
    assert f"vidgen is up at http://127.0.0.1:{port}" in console
    assert console.count("stopped: Serve and the local Ray this command started are shut down") == 1
    log = assert_quiet(console)
    assert log is not None
    logged = log.read_text()
    assert "Connecting to existing Serve app" in logged and "(ServeController pid=" in logged
    assert "POST /v1/videos/sync 200" in logged


@pytest.mark.slow
def test_own_videos_ingest_verify_train_generate_are_quiet(tmp_path):
    made = subprocess.run([sys.executable, str(REPO / "examples" / "test_videos.py"), "out/my-videos"], cwd=tmp_path,
                          env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    ingest = vidgen(tmp_path, "data", "ingest", "out/my-videos", "--captions", "out/my-videos/captions.csv",
                    "--out", "data/mine", "--allow-licence", "cc0-1.0")
    assert ingest.returncode in (0, 2), ingest.stdout + ingest.stderr  # 2: some files refused, each named
    assert_quiet(ingest.stdout + ingest.stderr)
    verify = vidgen(tmp_path, "data", "verify", "data/mine")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert_quiet(verify.stdout + verify.stderr)
    train = vidgen(tmp_path, "train", "--data", "data/mine", "--autoencoder", "shapes-tiny", "--steps", "12",
                   "--out", "runs/mine")
    console = train.stdout + train.stderr
    assert train.returncode == 0, console
    assert_quiet(console)
    card = (tmp_path / "runs" / "mine" / "card.md").read_text()
    said = re.search(r"loss \d+\.\d{4} -> \d+\.\d{4} \(means of the first and of the last 6 steps\)", console)
    assert said and said.group(0) in " ".join(card.split())  # the card's first loss is the console's
    generate = vidgen(tmp_path, "generate", "waves on a beach", "--model", "runs/mine", "--out", "clip.mp4")
    assert generate.returncode == 0, generate.stdout + generate.stderr
    assert (tmp_path / "clip.mp4").stat().st_size > 0 and "None" not in generate.stdout
    assert_quiet(generate.stdout + generate.stderr)
    assert json.loads((tmp_path / "data" / "mine" / "index.json").read_text())


@pytest.mark.slow
def test_model_lifecycle_push_promote_history_rollback_by_alias_is_quiet(tmp_path):
    """README's "Releasing a model", with shipped names as references: two versions, the gate, a rollback."""
    for model, version in (("shapes-tiny", "v1"), ("shapes-tiny-k1", "v2")):
        push = vidgen(tmp_path, "models", "push", model, "shapes")
        assert push.returncode == 0 and f"shapes@{version}" in push.stdout, push.stdout + push.stderr
        assert_quiet(push.stdout + push.stderr)
    small = ("--clips", "8", "--steps", "4")
    first = vidgen(tmp_path, "models", "promote", "shapes@v1", "--to", "production", "--reason", "first", *small)
    assert first.returncode == 0 and "shapes@production -> v1 (was unset)" in first.stdout, first.stdout + first.stderr
    assert_quiet(first.stdout + first.stderr)
    second = vidgen(tmp_path, "models", "promote", "shapes@v2", "--to", "production", "--reason", "the student",
                    "--force", *small)
    assert second.returncode == 0 and "-> v2 (was v1)" in second.stdout, second.stdout + second.stderr
    history = vidgen(tmp_path, "models", "history", "shapes")
    assert history.returncode == 0 and "first" in history.stdout and "the student" in history.stdout
    back = vidgen(tmp_path, "models", "rollback", "shapes", "--alias", "production", "--reason", "regressed", "--yes")
    assert back.returncode == 0 and "shapes@production -> v1 (was v2)" in back.stdout, back.stdout + back.stderr
    generate = vidgen(tmp_path, "generate", "a red square moving right", "--model", "shapes@production",
                      "--out", "clip.mp4")
    console = generate.stdout + generate.stderr
    assert generate.returncode == 0 and (tmp_path / "clip.mp4").stat().st_size > 0, console
    assert "with shapes@v1#" in console  # the alias resolved to the version rolled back to
    for result in (second, history, back, generate):
        assert_quiet(result.stdout + result.stderr)
