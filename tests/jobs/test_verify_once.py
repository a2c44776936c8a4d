"""Each process that uses a model folder hashes it once: a two-actor render of a registry model hashes the cached copy
three times (the driver planning, each actor loading), where pulling and loading once hashed it twice per process.

The count is taken in the processes themselves: `vidgen render` runs in a subprocess whose Python processes (the
driver, and the Ray workers it starts, which inherit its environment) load a `sitecustomize` that records, through
an audit hook, every open for reading of the package's `card.md`. Only verification reads that file (loading reads
the config and the weights), so its opens are the hash passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from storage.registry import push
from vidgen.pipelines.references import resolve_model

ROOT = Path(__file__).resolve().parents[2]
OPEN_RECORDER = '''
import os, sys

_LOG, _CACHE = os.environ["VIDGEN_TEST_OPEN_LOG"], os.environ["VIDGEN_CACHE"]


def _record(event, args):
    if event != "open":
        return
    path, mode = args[0], args[1]
    reading = isinstance(mode, str) and not set(mode) & set("wax+")
    if reading and isinstance(path, str) and path.endswith("card.md") and path.startswith(_CACHE):
        with open(_LOG, "a") as log:
            log.write(f"{os.getpid()}\\n")


sys.addaudithook(_record)
'''


@pytest.mark.slow
def test_a_two_actor_render_hashes_the_model_once_per_process(tmp_path):
    registry, cache, hooks = tmp_path / "registry", tmp_path / "cache", tmp_path / "hooks"
    push(resolve_model("shapes-tiny"), f"{registry}/shapes")
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(OPEN_RECORDER)
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "a red square moving right", "seed": i}) + "\n"
                                for i in range(4)))
    log = tmp_path / "opens.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), str(ROOT)]), "VIDGEN_CACHE": str(cache),
           "VIDGEN_TEST_OPEN_LOG": str(log), "RAY_ADDRESS": ""}
    vidgen = shutil.which("vidgen", path=str(Path(sys.executable).parent))
    result = subprocess.run([vidgen, "render", str(manifest), "--model", f"{registry}/shapes@v1", "--out",
                             str(tmp_path / "out"), "--actors", "2", "--batch-size", "2", "--steps", "2"],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list((tmp_path / "out" / "videos").glob("*.mp4"))) == 4
    passes = Counter(log.read_text().split())
    assert len(passes) == 3 and set(passes.values()) == {1}, passes  # the driver and two actors, once each
