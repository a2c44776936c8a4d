"""Deploying, inspecting and removing the serving application: what `vidgen serve up|status|down` do.

Before deploying, the config is made safe to ship: the bearer token's sha256 (never the token) goes into the
application's args, `--insecure-local` is refused on anything but a loopback address, and a relative `renders_uri`
becomes absolute. Every tier's replica must fit on some node, because Ray Serve waits forever for a replica
no node can hold.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cluster.auth import token_digest
from cluster.serve_app import build_app
from cluster.serve_config import ServeConfig
from storage.objectstore import parse_uri
from vidgen import console_logging

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class DeployError(RuntimeError):
    """The config cannot be deployed as it is; the message says what to change."""


def prepare_config(cfg: ServeConfig, http_host: str, insecure_local: bool, environ: dict[str, str]) -> ServeConfig:
    """The config to ship: auth resolved to a digest (unless insecure, on loopback only), renders_uri made absolute."""
    cfg = cfg.model_copy(deep=True)
    if insecure_local:
        if http_host not in LOOPBACK_HOSTS:
            raise DeployError(f"--insecure-local serves without a token, so only on loopback; http_options.host is "
                              f"{http_host!r}: set it to 127.0.0.1 or set {cfg.auth.token_env}")
    elif cfg.auth.keys_file:  # the callers' token digests are in the file, read where the router runs
        cfg.auth.keys_file = str(Path(cfg.auth.keys_file).expanduser().resolve())
    else:
        try:
            cfg.auth.token_sha256 = token_digest(cfg.auth, environ)
        except RuntimeError as exc:
            raise DeployError(str(exc)) from None
    if parse_uri(cfg.renders_uri).scheme == "file":
        cfg.renders_uri = str(Path(parse_uri(cfg.renders_uri).fs_path).resolve())
    return cfg


def replica_demand(cfg: ServeConfig) -> dict[str, dict[str, float]]:
    """What one replica of each tier asks Ray for, in Ray's resource names."""
    demand = {}
    for name, tier in cfg.tiers.items():
        ask = {"CPU": tier.num_cpus, "GPU": tier.num_gpus, **tier.resources}
        demand[name] = {k: v for k, v in ask.items() if v > 0}
    return demand


def local_resources(cfg: ServeConfig) -> dict[str, float]:
    """Custom resources a one-machine cluster needs so every tier can reach its max_replicas."""
    total: dict[str, float] = {}
    for tier in cfg.tiers.values():
        for key, amount in tier.resources.items():
            total[key] = total.get(key, 0) + amount * tier.autoscaling.max_replicas
    return total


def unplaceable_tiers(cfg: ServeConfig, nodes: list[dict]) -> list[str]:
    """Tiers whose replica fits on no alive node (`nodes` as `ray.nodes()` gives them), each with the why."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    problems = []
    for name, ask in replica_demand(cfg).items():
        if not any(all(node.get(k, 0) >= v for k, v in ask.items()) for node in alive):
            problems.append(f"tier {name} asks for {ask} per replica and no node of this cluster has that")
    return problems


def deploy(deploy_file: dict, cfg: ServeConfig, allow_pending: bool = False, timeout_s: float = 300,
           insecure_local: bool = False) -> dict:
    """Deploy to the Ray this process is connected to; wait until every tier has a replica reporting."""
    import ray
    from ray import serve

    problems = unplaceable_tiers(cfg, ray.nodes())
    if problems and not allow_pending:
        raise DeployError("; ".join(problems) + ". Add such nodes (cluster.yaml), use --config local on "
                          "one machine, or pass --allow-pending if the autoscaler will add them")
    app = next(a for a in deploy_file["applications"] if a["import_path"].startswith("cluster.serve_app"))
    # Serve's documented idiom (start with the file's http_options, then run) makes serve.run log "Connecting to
    # existing Serve app ... will not be applied" even on a fresh start: serve.run has no http_options and always
    # calls serve_start again. Harmless (serve.start applied them); it goes to the command's log file.
    console_logging.route_library_loggers()  # ray.serve configured its logger when imported
    serve.start(http_options=deploy_file.get("http_options"), proxy_location=deploy_file.get("proxy_location"))
    try:
        serve.run(build_app(cfg.model_dump(mode="json"), insecure_local), name=cfg.app_name,
                  route_prefix=app.get("route_prefix", "/"))
    except RuntimeError as exc:  # Serve's DEPLOY_FAILED, with the replica's error inside
        raise DeployError(f"{cfg.app_name} failed to deploy: {str(exc).strip().splitlines()[-1]}; see `vidgen serve "
                          "status` and the Serve logs") from None
    board = serve.get_deployment_handle("TierBoard", app_name=cfg.app_name)
    deadline = time.monotonic() + timeout_s
    while True:
        reports = board.snapshot.remote().result()
        replicas = {name: sum(r.tier == name for r in reports) for name in cfg.tiers}
        if all(replicas.values()):
            return replicas
        if time.monotonic() > deadline:
            raise DeployError(f"after {timeout_s:.0f} s the tiers report {replicas} replicas; see `vidgen serve "
                              "status` and the Serve logs")
        time.sleep(cfg.report_every_s)


def _name(state) -> str:
    """Serve reports states as str enums in some places and plain strings in others."""
    return getattr(state, "value", state)


def status(app_name: str = "vidgen") -> dict:
    """The application's state and each deployment's replicas by state, from Ray Serve."""
    from ray import serve

    apps = serve.status().applications
    if app_name not in apps:
        return {"app": app_name, "status": "NOT_DEPLOYED", "message": "", "deployments": {}}
    app = apps[app_name]
    deployments = {name: {"status": _name(d.status), "message": d.message,
                          "replicas": {_name(state): count for state, count in d.replica_states.items()}}
                   for name, d in app.deployments.items()}
    return {"app": app_name, "status": _name(app.status), "message": app.message, "deployments": deployments}


def down(app_name: str = "vidgen") -> bool:
    """Delete the application; False when it was not deployed."""
    from ray import serve

    if app_name not in serve.status().applications:
        return False
    serve.delete(app_name)
    return True
