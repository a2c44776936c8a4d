"""Where vidgen keeps per-user files: one home for state, one for caches (each overridable by a variable).

    ~/.vidgen/                ($VIDGEN_HOME)
        registry/             the default model registry ($VIDGEN_REGISTRY names another: a folder or s3://)
        cluster.yaml          which cluster the Jobs commands talk to ($VIDGEN_CLUSTER_CONFIG names another)
        local-cluster.json    the head `vidgen cluster up` started on this machine
        runs-secret           the secret training runs' checkpoint keys derive from ($VIDGEN_RUNS_SECRET wins)
    ~/.cache/vidgen/          ($VIDGEN_CACHE_HOME, else $XDG_CACHE_HOME/vidgen)
        models/               registry models pulled and verified ($VIDGEN_CACHE names another)

Paths are read from the environment when asked for, so a test or a second user can point them elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("VIDGEN_HOME") or "~/.vidgen").expanduser()


def cache_home() -> Path:
    if os.environ.get("VIDGEN_CACHE_HOME"):
        return Path(os.environ["VIDGEN_CACHE_HOME"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "vidgen"


def registry_root() -> str:
    return os.environ.get("VIDGEN_REGISTRY") or str(home() / "registry")


def model_cache() -> Path:
    return Path(os.environ.get("VIDGEN_CACHE") or cache_home() / "models").expanduser()


def cluster_config(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("VIDGEN_CLUSTER_CONFIG") or home() / "cluster.yaml").expanduser()


def local_cluster_state() -> Path:
    return home() / "local-cluster.json"


def runs_secret_file() -> Path:
    """Where this machine's runs secret is kept when $VIDGEN_RUNS_SECRET does not give it."""
    return home() / "runs-secret"
