"""`vidgen serve up|status|down`: the HTTP service on Ray Serve (cluster/serve_app.py), from a deploy file."""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from typing import Annotated

import typer

from vidgen.cli._common import fail, one_line_errors, setup_logging

app = typer.Typer(
    help="Serve clips over HTTP with Ray Serve: an edge tier (int8 weights, fewer steps, CPU) and a cloud tier "
         "(the full model), chosen per request by the placement policy, each autoscaled. The config is a Ray Serve "
         "deploy file, or the name of one vidgen ships: local (one machine), cluster, diffusers.",
    no_args_is_help=True,
)
log = logging.getLogger("vidgen")

ConfigOption = Annotated[str, typer.Option("--config", help="a shipped deploy file by name (local: one "
                                                            "machine; cluster; diffusers) or a Serve deploy file "
                                                            "whose application is cluster.serve_app:build_app")]
AddressOption = Annotated[str | None, typer.Option(help="Ray cluster address (default: $RAY_ADDRESS)")]


def _joined() -> bool:
    """True when this process is already on its cluster (a notebook, the tests): nothing to set up or join."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def _connect(address: str | None) -> str:
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        fail("no cluster to ask: give --address or set RAY_ADDRESS (a `vidgen serve up` without an address serves "
             "in its own terminal and stops with it)")
    from jobs.connection import connect_ray

    connect_ray(address)
    return address


@app.command()
@one_line_errors(FileNotFoundError, ValueError)
def up(
    config: ConfigOption = "local",
    address: AddressOption = None,
    insecure_local: Annotated[bool, typer.Option(help="serve without a bearer token (loopback hosts only)")] = False,
    allow_pending: Annotated[bool, typer.Option(help="deploy even if no node can hold a tier's replica yet (an "
                                                     "autoscaler will add one)")] = False,
) -> None:
    """Deploy the service and wait until every tier has a replica.

    With --address (or RAY_ADDRESS) it is deployed to that cluster and keeps running after this command returns.
    Without, a local Ray is started with the custom resources the tiers ask for, and this command serves in the
    foreground until Ctrl-C. The bearer token is read from $VIDGEN_SERVE_TOKEN (only its sha256 is shipped).
    """
    setup_logging()
    address = address or os.environ.get("RAY_ADDRESS")
    if address and not _joined():
        from jobs.connection import use_token_for_ray

        use_token_for_ray()  # before Ray is imported (cluster.deploy imports it)
    from cluster.deploy import local_resources, prepare_config
    from cluster.serve_config import read_deploy_file

    deploy_file, cfg = read_deploy_file(config)
    http = deploy_file.get("http_options") or {}
    if insecure_local and address:
        fail("--insecure-local is for a `vidgen serve up` on this machine (no --address): a running cluster's HTTP "
             "proxy may listen beyond loopback")
    cfg = prepare_config(cfg, http.get("host", "127.0.0.1"), insecure_local, dict(os.environ))
    if address:
        _connect(address)
        _deploy(deploy_file, cfg, http, allow_pending, insecure_local)
        return
    from jobs.connection import connect_ray

    connect_ray(None, resources=local_resources(cfg))
    with _local_ray_stopped_at_exit():
        _deploy(deploy_file, cfg, http, allow_pending, insecure_local)
        typer.echo("serving in the foreground; Ctrl-C (or SIGTERM) stops it")
        while True:
            time.sleep(1)


def _deploy(deploy_file: dict, cfg, http: dict, allow_pending: bool, insecure_local: bool) -> None:
    """Deploy and say where the service is and how to call it."""
    from rich.console import Console

    from cluster.deploy import deploy

    with Console(stderr=True).status(f"deploying {cfg.app_name}: loading the models of both tiers"):
        started = time.perf_counter()
        replicas = deploy(deploy_file, cfg, allow_pending=allow_pending, insecure_local=insecure_local)
    url = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', 8000)}"
    typer.echo(f"{cfg.app_name} is up at {url} in {time.perf_counter() - started:.0f} s: "
               + ", ".join(f"{n} {tier} replica(s)" for tier, n in replicas.items()))
    typer.echo(f"  playground:    {url}/ (a page to try prompts in a browser: paste the token once)")
    typer.echo(f"  API spec:      {url}/docs (OpenAPI at {url}/openapi.json)")
    typer.echo(f"  async renders: {cfg.renders_uri}")
    for line in try_it(url, cfg.auth, insecure_local):
        typer.echo(line)


def try_it(url: str, auth, insecure_local: bool) -> list[str]:
    """How to call what is up: with curl and with the openai SDK, presenting the token this deployment takes."""
    if insecure_local:
        header, key = "", "'local'"
    elif auth.keys_file:  # one token per caller, each known only to its caller
        header, key = ' -H "Authorization: Bearer $TOKEN"', "TOKEN"
    else:
        header, key = f' -H "Authorization: Bearer ${auth.token_env}"', f"os.environ['{auth.token_env}']"
    lines = [f"  try:           curl -s{header} -H 'Content-Type: application/json' -d '{{\"prompt\": \"a red square "
             f"moving right\"}}' {url}/v1/videos/sync -o clip.mp4",
             f"  openai SDK:    OpenAI(base_url='{url}/v1', api_key={key}).videos.create_and_poll("
             "prompt='a red square moving right')"]
    if auth.keys_file and not insecure_local:
        lines.append(f"  callers:       TOKEN is a caller's own token; their sha256 digests are in {auth.keys_file}")
    return lines


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def _local_ray_stopped_at_exit():
    """Around a foreground `serve up` on the local Ray this process started: SIGTERM (what `kill` and process
    managers send) stops it as Ctrl-C does, replacing the handler Ray's core worker installed (a stack dump, and
    no shutdown); at exit Serve and Ray shut down, every process Ray started that outlived that (its agents ignore
    SIGTERM) is killed by PID after a grace period, and one line says so."""
    import ray
    from ray import serve

    from cluster.launcher import descendants, stop_processes

    signal.signal(signal.SIGTERM, _interrupted)
    try:
        yield
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the shutdown short
        started = descendants()  # now, while the raylet's agents and workers are still its children
        serve.shutdown()
        ray.shutdown()
        killed = stop_processes(started)
        typer.echo("stopped: Serve and the local Ray this command started are shut down and none of their processes "
                   "is left" + (f" ({killed} killed after a grace period)" if killed else ""))


@app.command()
@one_line_errors()
def status(address: AddressOption = None, app_name: Annotated[str, typer.Option("--app")] = "vidgen") -> None:
    """The application's state and each deployment's replicas, from the cluster's Serve controller."""
    setup_logging()
    _connect(address)
    from cluster.deploy import status as serve_status

    state = serve_status(app_name)
    typer.echo(f"{state['app']}: {state['status']} {state['message']}".rstrip())
    for name, deployment in state["deployments"].items():
        replicas = ", ".join(f"{n} {s.lower()}" for s, n in deployment["replicas"].items()) or "no replicas"
        typer.echo(f"  {name:15s} {deployment['status']:10s} {replicas} {deployment['message']}".rstrip())
    if state["status"] == "NOT_DEPLOYED":
        raise typer.Exit(1)


@app.command()
@one_line_errors()
def down(address: AddressOption = None, app_name: Annotated[str, typer.Option("--app")] = "vidgen") -> None:
    """Delete the application from the cluster (its replicas stop; the cluster stays up)."""
    setup_logging()
    _connect(address)
    from cluster.deploy import down as serve_down

    if not serve_down(app_name):
        fail(f"{app_name} is not deployed on this cluster")
    typer.echo(f"{app_name} deleted")
