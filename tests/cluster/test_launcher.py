"""`vidgen cluster down` on this machine stops only what `up` started and removes only the folder `up` made."""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from cluster import launcher

LOCAL = str(Path(__file__).resolve().parents[2] / "cluster" / "local.yaml")


def _sleeper(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


@pytest.mark.parametrize("kind", ["someone's folder", "a word", "a lookalike link"])
def test_a_tampered_state_file_stops_and_removes_nothing(kind, tmp_path, monkeypatch):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    recorded = {"someone's folder": str(precious), "a word": "python",
                "a lookalike link": f"/tmp/{launcher.LOCAL_TEMP_PREFIX}link-{tmp_path.name}"}[kind]
    if kind == "a lookalike link":
        Path(recorded).symlink_to(precious)
    monkeypatch.setenv("VIDGEN_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "local-cluster.json").write_text(json.dumps({"cluster": "x", "temp_dir": recorded}))
    bystander = _sleeper(f"--temp-dir={recorded}", f"{recorded}/x")
    try:
        with pytest.raises(RuntimeError, match="refusing to stop processes or remove anything"):
            launcher.down(LOCAL)
        assert bystander.poll() is None  # still running
        assert (precious / "keep.txt").read_text() == "mine"
    finally:
        bystander.kill()
        if kind == "a lookalike link":
            Path(recorded).unlink()


def test_only_processes_naming_a_path_inside_the_temp_dir_or_recorded_are_stopped():
    temp_dir = tempfile.mkdtemp(prefix=launcher.LOCAL_TEMP_PREFIX, dir="/tmp")
    ours = _sleeper(f"--temp-dir={temp_dir}")
    inside = _sleeper(f"{temp_dir}/session_1/logs")
    lookalike = _sleeper(f"{temp_dir}-another-one", f"--note={temp_dir}x")  # contains the string, names no path in it
    recorded = _sleeper(f"--log-dir={temp_dir}/logs")
    bystander = _sleeper()  # a process of ours that a tampered state file lists
    time.sleep(0.5)
    import psutil

    def entry(proc, shift=0.0):
        return {"pid": proc.pid, "started": psutil.Process(proc.pid).create_time() + shift}

    stale = entry(lookalike, -1000)  # a PID now used by some other process
    try:
        assert launcher.stop_local(temp_dir, [entry(recorded), stale, entry(bystander), {"pid": "x"}]) == 3
        for proc in (ours, inside, recorded):
            assert proc.wait(timeout=10) is not None
        assert lookalike.poll() is None and bystander.poll() is None and not Path(temp_dir).exists()
    finally:
        for proc in (ours, inside, lookalike, recorded, bystander):
            proc.kill()
