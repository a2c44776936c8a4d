"""What every command shares: logging set-up, the one handler that turns expected errors into one line and an exit
status, the `--set` option and its precedence, the progress bar."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Annotated

import typer
from pydantic import ValidationError

from vidgen import console_logging
from vidgen.clip_request import problems_of

# The project's own errors: each is raised only for something a person can fix, with a message that says how.
# Named, not imported, so `--help` stays instant: an error whose module was never imported cannot have happened.
PROJECT_ERRORS = (
    ("vidgen.config", "ConfigError"),
    ("storage.objectstore", "StorageError"),
    ("storage.package", "ModelFileError"),
    ("jobs.connection", "ClusterConnectionError"),
    ("jobs.train", "TrainingError"),
    ("cluster.deploy", "DeployError"),
)
EXPECTED_ERROR_STATUS = 1  # status 2 is not an error: a run that finished and refused some of its rows or files
GATE_REFUSED_STATUS = 3  # `vidgen models promote`: the gate said no (nothing is broken; nothing moved)

CONFIG_PRECEDENCE = "flags given here override --set, and --set overrides this file"
CACHE_HELP = ("step caching as KIND[:THRESHOLD], e.g. first_block:0.1: steps whose first transformer block barely "
              "changed reuse the last full step's other blocks (faster, at a measured quality cost: "
              "docs/BENCHMARKS.md); kinds first_block (any model) and sea (diffusers Wan); off by default")
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="set a config key, e.g. --set seed=3; a dotted key reaches into a section (--set SECTION.KEY=VALUE) and "
         "the value is read as YAML (numbers, true, null, lists); repeatable. Flags given here override --set, "
         "and --set overrides the --config file")]


def setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)], force=True)
    for noisy in ("sentence_transformers", "transformers", "httpx", "huggingface_hub", "ray", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    console_logging.route_library_loggers()


VERBOSE_HELP = ("show every message of Ray, Ray Serve, Ray Data, DeepSpeed and torchao on the console; without it "
                "they go to a log file under $VIDGEN_HOME/logs (named when the command ends), and only vidgen's "
                "progress, summaries, errors and other libraries' ERROR lines are shown")


def start_console_logging(verbose: bool) -> None:
    """Route library chatter for this command (the `--verbose` option of `vidgen`): to a log file of its own."""
    import datetime
    import os

    from storage.user_state import home

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    console_logging.start(home() / "logs" / f"vidgen-{stamp}-{os.getpid()}.log", verbose)


def name_the_log_file() -> None:
    """At the end of a command that routed chatter to its log file: say where it is."""
    path = console_logging.log_path()
    if path is not None:
        typer.secho(f"Ray, Serve and library messages of this command: {path} (vidgen --verbose shows them here)",
                    err=True, dim=True)


def fail(message: str, status: int = EXPECTED_ERROR_STATUS) -> None:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(status)


def one_line_errors(*also: type[Exception]) -> Callable[[Callable], Callable]:
    """Decorate a command: the project's errors (PROJECT_ERRORS) and `also`, the built-in types its libraries use
    for bad input (ValueError for pydantic and argument checks, RuntimeError for Ray's job SDK, ...), end it with
    `error: MESSAGE` on one line and status 1. Anything else is a bug and keeps its traceback."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except (typer.Exit, typer.Abort):  # RuntimeErrors too, but how a command ends on purpose
                raise
            except Exception as err:
                if not isinstance(err, also) and not _project_error(err):
                    raise
                fail(error_line(err))

        return run

    return decorate


def error_line(error: Exception) -> str:
    """The message of an expected error on one line: a pydantic error field by field, else its first line (the
    project's messages are one line; Ray's SDK appends the server's response to its first)."""
    if isinstance(error, ValidationError):
        return "; ".join(problems_of(error))
    return str(error).strip().partition("\n")[0]


def _project_error(error: Exception) -> bool:
    return any(isinstance(error, getattr(sys.modules[module], name, ()))
               for module, name in PROJECT_ERRORS if module in sys.modules)


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[status]}"), transient=False)
