"""`vidgen cluster up|down|status|scale`: Ray's cluster launcher and autoscaler, from the command line."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from vidgen.cli._common import fail, one_line_errors, setup_logging

app = typer.Typer(help="Start, resize, inspect and stop a Ray cluster: cluster.yaml (AWS, through Ray's cluster "
                       "launcher) or --config local (simulated nodes on this machine, the real autoscaler).",
                  no_args_is_help=True)

ConfigOption = Annotated[str, typer.Option("--config", help="cluster launcher config: a file such as "
                                                            "cluster.yaml, or local (shipped: simulated nodes on "
                                                            "this machine)")]
GcsOption = Annotated[str | None, typer.Option(
    "--address", help="the cluster's GCS address HOST:PORT (default: the cluster `vidgen cluster up` started "
                      "here, else $RAY_ADDRESS, else auto: the cluster this machine is part of)")]
TokenOption = Annotated[str | None, typer.Option(help="file holding the cluster's auth token (default: "
                                                      "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")]


def _join(address: str | None, token_file: str | None) -> str:
    """Join the cluster as a driver (needed for the autoscaler SDK); the token must be set before Ray loads."""
    from storage.user_state import local_cluster_state

    state = local_cluster_state()
    env = os.environ.get("RAY_ADDRESS", "")
    if not address:
        address = (json.loads(state.read_text())["gcs_address"] if state.is_file()
                   else env if env and "://" not in env else "auto")
    from jobs.connection import connect_ray

    connect_ray(address, token_file=token_file, log_to_driver=False)
    return address


# The launcher says a missing or wrong config, and a failed `ray start`, as these.
_launcher_errors = one_line_errors(FileNotFoundError, ValueError, RuntimeError)


@app.command()
@_launcher_errors
def up(config: ConfigOption = "local",
       port: Annotated[int, typer.Option(help="local clusters: the head's GCS port")] = 6379,
       dashboard_port: Annotated[int, typer.Option(help="local clusters: the dashboard's port")] = 8265) -> None:
    """Start the cluster (or update a running one to the config); its autoscaler then adds and removes workers."""
    setup_logging()
    from rich.console import Console

    from cluster.launcher import read_config
    from cluster.launcher import up as launch

    name = read_config(config)["cluster_name"]
    with Console(stderr=True).status(f"starting {name}"):
        state = launch(config, port, dashboard_port)
    typer.echo(f"{state['cluster']} is up")
    if "dashboard" in state:
        typer.echo(f"  dashboard and Jobs API: {state['dashboard']}   (vidgen submit … --address {state['dashboard']})")
        typer.echo(f"  GCS: {state['gcs_address']}   (vidgen cluster status, scale, down --config {config})")


@app.command()
@_launcher_errors
def down(config: ConfigOption = "local") -> None:
    """Stop the cluster: every node of a cloud cluster, or the local head and its simulated nodes."""
    setup_logging()
    from cluster.launcher import down as teardown

    typer.echo(teardown(config))


@app.command()
@one_line_errors()
def status(address: GcsOption = None, token_file: TokenOption = None) -> None:
    """Nodes by type, resources used of total, and the demands the autoscaler has not met yet."""
    setup_logging()
    address = _join(address, token_file)
    from cluster.launcher import status as cluster_status

    state = cluster_status()
    typer.echo(f"cluster at {address}")
    typer.echo("nodes:     " + ", ".join(f"{n} {t}" for t, n in sorted(state["nodes"].items())))
    typer.echo("resources: " + ", ".join(f"{k} {used:g}/{total:g}" for k, (used, total) in
                                         state["resources"].items()))
    typer.echo("pending:   " + json.dumps(state["pending"]))


@app.command()
@one_line_errors()
def scale(cpus: Annotated[int, typer.Option(help="CPU slots to keep available")] = 0,
          gpus: Annotated[int, typer.Option(help="GPUs to keep available")] = 0,
          edge: Annotated[int, typer.Option(help="edge slots (each: 1 CPU + the `edge` resource)")] = 0,
          cloud: Annotated[int, typer.Option(help="cloud slots (each: 1 CPU + the `cloud` resource)")] = 0,
          reset: Annotated[bool, typer.Option(help="clear the request; idle workers then time out")] = False,
          address: GcsOption = None, token_file: TokenOption = None) -> None:
    """Ask the autoscaler to keep this much capacity (it replaces any earlier request) or, with --reset, none."""
    setup_logging()
    address = _join(address, token_file)
    from cluster.launcher import scale as request

    if not reset and not (cpus or gpus or edge or cloud):
        fail("nothing asked: give --cpus, --gpus, --edge or --cloud, or --reset")
    wanted = request(cpus, gpus, edge, cloud, reset)
    typer.echo(f"asked {address} for {len(wanted)} bundles" if wanted else f"cleared the request on {address}")
