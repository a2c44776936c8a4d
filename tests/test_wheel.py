"""`pip install .` (not editable) gives a working vidgen: presets and the demo model are package data."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_generates_with_its_shipped_model_and_presets(tmp_path):
    source = tmp_path / "source"
    for package in ("vidgen", "storage", "jobs", "cluster"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    python = sys.executable
    subprocess.run([python, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("vidgen-*.whl"))
    target = tmp_path / "site"
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1"}

    def vidgen(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-m", "vidgen.cli", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    where = subprocess.run([python, "-c", "import vidgen; print(vidgen.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(target))  # the wheel's copy, not this checkout
    made = vidgen("generate", "a red square moving right", "--seed", "1", "--steps", "4", "--out", "clip.mp4")
    assert made.returncode == 0, made.stdout + made.stderr
    assert (elsewhere / "clip.mp4").stat().st_size > 1000 and "detector reads" in made.stdout
    dry = vidgen("train", "--preset", "small", "--dry-run")
    assert dry.returncode == 0 and '"preset": "small"' in dry.stdout, dry.stdout + dry.stderr
    shipped = subprocess.run([python, "-c", "from cluster.serve_config import read_deploy_file as r; "
                              "from cluster.launcher import read_config as c; "
                              "print(r('local')[1].app_name, c('local')['cluster_name'])"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert shipped.returncode == 0 and shipped.stdout.startswith("vidgen "), shipped.stderr  # --config local
    page = subprocess.run([python, "-c", "from cluster.playground import playground_page as p; print(p().html[:15])"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert page.returncode == 0 and "<!doctype html>" in page.stdout, page.stderr  # GET / finds its page
