"""Which cluster a command talks to, and with which token: flags, then the environment, then a config file.

The address is a Ray dashboard URL (`http://HEAD:8265`), as for `ray job submit --address`. Ray 2.60 turns token
authentication on by default, so every request carries `Authorization: Bearer <token>`; the token is found, in order,
in `--token-file`, `$RAY_AUTH_TOKEN`, `$RAY_AUTH_TOKEN_PATH`, the config file's `token_file`, and `~/.ray/auth_token`
(where `ray start` writes it). The config file is `$VIDGEN_CLUSTER_CONFIG` or `~/.config/vidgen/cluster.yaml`:

    address: http://10.0.0.5:8265
    token_file: ~/.ray/prod_token
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG = Path("~/.config/vidgen/cluster.yaml")
DEFAULT_TOKEN_FILE = Path("~/.ray/auth_token")


class ClusterConnectionError(RuntimeError):
    """No cluster named, or the named one cannot be reached; the message says how to point at another."""


@dataclass(frozen=True)
class Target:
    """A cluster to talk to: its dashboard URL, the bearer token (if any) and where each came from."""

    address: str
    token: str | None
    source: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _config_file(environ: dict[str, str]) -> dict:
    import yaml

    path = Path(environ.get("VIDGEN_CLUSTER_CONFIG", str(DEFAULT_CONFIG))).expanduser()
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or set(data) - {"address", "token_file"}:
        raise ClusterConnectionError(f"{path}: expected only the keys address and token_file")
    return {**data, "path": str(path)}


def _read_token(path: str | Path, what: str) -> str:
    path = Path(path).expanduser()
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ClusterConnectionError(f"cannot read the Ray token file {path} ({what}): {exc.strerror}") from None


def resolve(address: str | None = None, token_file: str | None = None,
            environ: dict[str, str] | None = None) -> Target:
    """The cluster and token a command should use."""
    environ = dict(os.environ) if environ is None else environ
    config = _config_file(environ)
    if address:
        source = "--address"
    elif environ.get("RAY_ADDRESS"):
        address, source = environ["RAY_ADDRESS"], "RAY_ADDRESS"
    elif config.get("address"):
        address, source = config["address"], config["path"]
    else:
        raise ClusterConnectionError("no cluster given: pass --address http://HEAD:8265, set RAY_ADDRESS, or write "
                               f"address: in {DEFAULT_CONFIG}")
    if "://" not in address:
        address = f"http://{address}"
    if token_file:
        token = _read_token(token_file, "--token-file")
    elif environ.get("RAY_AUTH_TOKEN"):
        token = environ["RAY_AUTH_TOKEN"].strip()
    elif environ.get("RAY_AUTH_TOKEN_PATH"):
        token = _read_token(environ["RAY_AUTH_TOKEN_PATH"], "RAY_AUTH_TOKEN_PATH")
    elif config.get("token_file"):
        token = _read_token(config["token_file"], config["path"])
    elif DEFAULT_TOKEN_FILE.expanduser().is_file():
        token = _read_token(DEFAULT_TOKEN_FILE, "the default")
    else:
        token = None
    return Target(address=address.rstrip("/"), token=token, source=source)
