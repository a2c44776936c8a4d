"""Which cluster a command talks to, and with which token: flags, then the environment, then a config file.

The address is a Ray dashboard URL (`http://HEAD:8265`), as for `ray job submit --address`. Ray 2.60 turns token
authentication on by default, so every request carries `Authorization: Bearer <token>`; the token is found, in order,
in `--token-file`, `$RAY_AUTH_TOKEN`, `$RAY_AUTH_TOKEN_PATH`, the config file's `token_file`, and `~/.ray/auth_token`
(where `ray start` writes it). The config file is `$VIDGEN_CLUSTER_CONFIG` or `~/.vidgen/cluster.yaml`:

    address: http://10.0.0.5:8265
    token_file: ~/.ray/prod_token

`connect_ray` is the one place vidgen starts or joins Ray as a driver (jobs, `vidgen cluster`, `vidgen serve`).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from storage.user_state import cluster_config
from vidgen import console_logging

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

    path = cluster_config(environ)
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


def find_token(token_file: str | None = None, environ: dict[str, str] | None = None,
               config: dict | None = None) -> tuple[str | None, str]:
    """The bearer token to present and where it came from (None when there is none to find)."""
    if token_file:
        return _read_token(token_file, "--token-file"), "--token-file"
    environ = dict(os.environ) if environ is None else environ
    config = _config_file(environ) if config is None else config
    if environ.get("RAY_AUTH_TOKEN"):
        return environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    if environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token(environ["RAY_AUTH_TOKEN_PATH"], "RAY_AUTH_TOKEN_PATH"), "RAY_AUTH_TOKEN_PATH"
    if config.get("token_file"):
        return _read_token(config["token_file"], config["path"]), config["path"]
    if DEFAULT_TOKEN_FILE.expanduser().is_file():
        return _read_token(DEFAULT_TOKEN_FILE, "the default"), str(DEFAULT_TOKEN_FILE)
    return None, "none found"


def use_token_for_ray(token_file: str | None = None) -> None:
    """Make a driver about to `ray.init(address=...)` present the cluster's token: Ray reads RAY_AUTH_MODE and
    the token when it is imported, and an explicit address gets no token otherwise. Call before importing ray.
    A RAY_AUTH_MODE already set (e.g. `disabled`) is left alone."""
    if "RAY_AUTH_MODE" in os.environ and not token_file:
        return
    token, _ = find_token(token_file)
    if token:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = token


def resolve(address: str | None = None, token_file: str | None = None,
            environ: dict[str, str] | None = None) -> Target:
    """The cluster (dashboard URL) and token a Jobs API command should use."""
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
                                     f"address: in {cluster_config()}")
    if "://" not in address:
        address = f"http://{address}"
    token, _ = find_token(token_file, environ, config)
    return Target(address=address.rstrip("/"), token=token, source=source)


def configure_data_context() -> None:
    """Ray Data settings every vidgen driver shares (they are per driver process)."""
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own; Ray Data's are noisy off a TTY
    context.print_on_execution_start = False
    # Ray Data holds back half of the CPUs for each operator by default; on a 2-CPU node that left one
    # decode task running at a time (measured: half the throughput of benchmarks/stream.py). vidgen's
    # pipelines are one or two fused operators, which the reservation has nothing to protect.
    context.op_resource_reservation_enabled = False


def connect_ray(address: str | None = None, num_cpus: int | None = None, resources: dict[str, float] | None = None,
                token_file: str | None = None, log_to_driver: bool = True,
                credentials: dict[str, str] | None = None, dashboard: bool = True) -> None:
    """Use the Ray this process is already connected to; else join `address` (`auto`, `HOST:PORT`), presenting the
    cluster's token, or start a local Ray (`None`) with `num_cpus` and custom `resources`.

    A local start never attaches to another cluster running on the machine (`address="local"`). The token must be
    in the environment before Ray is imported, so callers import ray only after this (or lazily).

    `credentials` (S3 credentials a config gave, as AWS_* variables) go into this process's environment, where a
    local Ray started here inherits them as its node's own: Ray never carries them (its dashboard and state API show
    every runtime_env). The nodes of a cluster joined by address use their own credential chain.

    `dashboard=False`: a local start runs without Ray's dashboard. The batch jobs ask for that: their cluster lives
    as long as one command, which shows its own progress, and the dashboard is ~1 s of a local Ray's ~5 s start on
    2 cores (docs/BENCHMARKS.md, "Render start, profiled").
    """
    os.environ.update(credentials or {})
    if "ray" not in sys.modules or not sys.modules["ray"].is_initialized():
        if address:
            use_token_for_ray(token_file)
        import ray

        console_logging.filter_native_stderr()  # Ray's C++ core worker writes to fd 2 from ray.init on
        console_logging.route_library_loggers()  # the token notice is logged during ray.init
        local = ({"num_cpus": num_cpus, "resources": resources, "include_dashboard": None if dashboard else False}
                 if address is None else {})
        try:
            ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=log_to_driver, **local)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if address is None:
                raise ClusterConnectionError(f"could not start a local Ray: {str(exc).strip().splitlines()[0]}"
                                             ) from None
            raise ClusterConnectionError(f"could not join the Ray cluster at {address}: "
                                         f"{str(exc).strip().splitlines()[0]}. Point at another with --address "
                                         "HOST:PORT (its GCS port, 6379 by default) or RAY_ADDRESS") from None
        _route_worker_output()
    configure_data_context()
    console_logging.route_library_loggers()  # ray.data configured its loggers when imported


def _route_worker_output() -> None:
    """What Ray sends the driver (workers', actors' and the raylet's output with log_to_driver, and the error
    channel) goes through vidgen's console rules (`vidgen.console_logging.worker_output`) instead of Ray's printer,
    when the CLI routes chatter."""
    if not console_logging.routing():
        return
    from ray._private import worker

    worker.global_worker_stdstream_dispatcher.remove_handler("ray_print_logs")
    worker.global_worker_stdstream_dispatcher.add_handler("ray_print_logs", console_logging.worker_output)
    # the cluster's error channel (failed tasks, killed workers) calls this module function directly: Ray 2.60 has
    # no hook for it
    worker.print_to_stdstream = console_logging.worker_output
    console_logging.draw_progress_with(worker.process_tqdm)  # rank 0's bar, as Ray draws it


def require_gpus(address: str | None, workers: int) -> None:
    """Refuse a GPU run that the Ray this process started or uses locally cannot place: Ray Train would wait for GPUs
    no node has, forever. A cluster joined by `address` may add GPU nodes as it autoscales, so it is left to wait."""
    if address is not None:
        return
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus < workers:
        raise ValueError(f"use_gpu: the local Ray has {gpus} GPU(s) and the run needs {workers}, one per worker; "
                         "set use_gpu: false (drop --gpu), use fewer workers, or pass --address of a cluster with "
                         "GPUs")
