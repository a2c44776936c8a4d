"""`vidgen submit JOB -- ARGS` and `vidgen jobs list|status|logs|stop`: the Ray Jobs API, from the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from vidgen.cli._common import one_line_errors

app = typer.Typer(help="Follow and stop the jobs submitted to a Ray cluster (through its Jobs API).",
                  no_args_is_help=True)

AddressOption = Annotated[str | None, typer.Option(help="the cluster's dashboard URL, e.g. http://HEAD:8265 "
                                                        "(default: $RAY_ADDRESS, then ~/.vidgen/cluster.yaml)")]
TokenOption = Annotated[str | None, typer.Option(help="file holding the cluster's auth token (default: "
                                                      "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")]
JobId = Annotated[str, typer.Argument(help="the id `vidgen submit` printed (or `vidgen jobs list` shows)")]


# Ray's job SDK says "job not found" and friends as RuntimeError or ValueError.
_sdk_errors = one_line_errors(RuntimeError, ValueError)


def _target(address: str | None, token_file: str | None):
    from jobs.connection import resolve

    return resolve(address, token_file)


@_sdk_errors
def submit(
    job: Annotated[str, typer.Argument(help="a module of jobs/: prepare, train, render")],
    args: Annotated[list[str] | None, typer.Argument(help="arguments for the job, after --, e.g. -- --config "
                                                          "job.yaml --address auto")] = None,
    address: AddressOption = None,
    token_file: TokenOption = None,
) -> None:
    """Submit `python -m jobs.JOB ARGS` to a cluster, with this repository as the working directory.

    Prints the job id and how to follow it. The job runs in the cluster's Python environment (vidgen and its
    dependencies installed there, as cluster.yaml's setup commands do).
    """
    from cluster import job_submission

    target = _target(address, token_file)
    job_id = job_submission.submit(target, job, list(args or []))
    typer.echo(f"submitted {job_id} to {target.address}")
    typer.echo(f"  follow: vidgen jobs logs {job_id} --follow --address {target.address}")
    typer.echo(f"  status: vidgen jobs status {job_id} --address {target.address}")
    typer.echo(f"  stop:   vidgen jobs stop {job_id} --address {target.address}")


@app.command("list")
@_sdk_errors
def list_(address: AddressOption = None, token_file: TokenOption = None) -> None:
    """Every job submitted to the cluster, oldest first: id, status, command."""
    from cluster import job_submission

    rows = job_submission.list_jobs(_target(address, token_file))
    for row in rows:
        typer.echo(f"{row['job_id']:28s} {row['status']:10s} {row['entrypoint']}")
    if not rows:
        typer.echo("no jobs")


@app.command()
@_sdk_errors
def status(job_id: JobId, address: AddressOption = None, token_file: TokenOption = None) -> None:
    """A job's status; for a failed job, its error."""
    from cluster import job_submission

    info = job_submission.describe(_target(address, token_file), job_id)
    typer.echo(f"{info['job_id']}: {info['status']}")
    typer.echo(f"  command: {info['entrypoint']}")
    if info["message"]:
        typer.echo(f"  message: {info['message']}")
    if info["error_type"]:
        typer.echo(f"  error:   {info['error_type']}")


@app.command()
@_sdk_errors
def logs(job_id: JobId, follow: Annotated[bool, typer.Option(help="keep printing until the job ends")] = False,
         address: AddressOption = None, token_file: TokenOption = None) -> None:
    """A job's output (stdout and stderr of its driver)."""
    from cluster import job_submission

    target = _target(address, token_file)
    if follow:
        job_submission.follow(target, job_id, lambda chunk: typer.echo(chunk, nl=False))
    else:
        typer.echo(job_submission.logs(target, job_id), nl=False)


@app.command()
@_sdk_errors
def stop(job_id: JobId, address: AddressOption = None, token_file: TokenOption = None) -> None:
    """Stop a running job (its driver and the tasks and actors it started)."""
    from cluster import job_submission

    if job_submission.stop(_target(address, token_file), job_id):
        typer.echo(f"{job_id}: stop requested")
    else:
        typer.echo(f"{job_id}: had already ended")
