"""What a person sees on the console: vidgen's progress, its summaries and real problems. The chatter of Ray, Serve,
Ray Data, DeepSpeed, torchao and Python warnings goes to a log file instead (all of it stays on the console with
`vidgen --verbose`).

Chatter reaches a vidgen command three ways, each routed here:

- the driver's own Python loggers (`ray`, `ray.data`, `ray.serve`, `deepspeed`, ..., and `py.warnings` for
  `warnings.warn`): `route_library_loggers` gives them the log file and a console handler for ERROR and above;
- Ray's workers, actors and raylet, whose stdout/stderr Ray forwards to the driver (`log_to_driver`):
  `worker_output` writes every line to the log file and echoes a batch to the console only when it holds a traceback
  or an ERROR/CRITICAL/FATAL line;
- Ray's C++ core worker inside this process, which writes its warnings straight to file descriptor 2
  (`core_worker.cc ... constructor arguments in the object store`): `filter_native_stderr` moves lines in Ray's C++
  log format to the log file, and every other byte written to stderr still reaches the console.

Only the CLI's entry point turns routing on (`start`); a library user or a test keeps Python's and Ray's defaults.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
from pathlib import Path

LIBRARY_LOGGERS = ("ray", "ray.data", "ray.serve", "ray.train", "ray.tune", "ray.air", "deepspeed", "DeepSpeed",
                   "torchao", "torch.distributed", "py.warnings")
# a line of Ray's C++ logger: "[2026-12-05 22:27:54,211 E 20533 20533] core_worker.cc:2465: ..."
NATIVE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWE] \d+ \d+\] \S+\.cc:\d+")
PROBLEM_LINE = re.compile(r"Traceback \(most recent call last\)|\b(ERROR|CRITICAL|FATAL)\b")
PROGRESS_TOKEN = "__ray_tqdm_magic_token__"  # a line of a worker's progress bar (ray.experimental.tqdm_ray)
KILLED_ON_PURPOSE = "killed by `ray.kill`"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_log_path: Path | None = None
_verbose = True  # until the CLI's entry point says otherwise: nothing is hidden from a library user or a test
_file_handler: logging.Handler | None = None
_lock = threading.Lock()
_draw_progress = None  # how a worker's progress-bar line is drawn on the console (set with Ray: its tqdm_ray)


def start(log_path: Path, verbose: bool) -> None:
    """Turn routing on for this process (the CLI entry point): library chatter goes to `log_path`, unless
    `verbose`, which keeps every library's own console output."""
    global _log_path, _verbose
    _log_path, _verbose = log_path, verbose
    if verbose:
        return
    logging.captureWarnings(True)  # warnings.warn -> the py.warnings logger, routed below
    route_library_loggers()


def routing() -> bool:
    """True when library chatter goes to the log file (the CLI, without --verbose)."""
    return _log_path is not None and not _verbose


def log_path() -> Path | None:
    """The log file of this command, once something was written to it."""
    return _log_path if _file_handler is not None else None


def _handler() -> logging.Handler:
    """The log file's handler, opened on first use so a quiet command leaves no empty file behind."""
    global _file_handler
    with _lock:
        if _file_handler is None:
            _log_path.parent.mkdir(parents=True, exist_ok=True)
            _file_handler = logging.FileHandler(_log_path, encoding="utf-8")
            _file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        return _file_handler


class _LazyFileHandler(logging.Handler):
    """Writes to the log file, opening it at the first record."""

    def emit(self, record: logging.LogRecord) -> None:
        _handler().handle(record)


def _console_problems() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    return handler


def route_library_loggers() -> None:
    """Point the libraries' loggers at the log file, with only ERROR and above on the console. Ray (re)configures
    its loggers when `ray`, `ray.data` and `ray.serve` are imported and when Ray starts, so callers run this again
    after those."""
    if not routing():
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [_LazyFileHandler(logging.INFO), _console_problems()]
        logger.propagate = False
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def is_problem(lines: list[str]) -> bool:
    """Whether a batch of a worker's output holds a traceback or an ERROR line: what a person must still see."""
    return any(PROBLEM_LINE.search(line) for line in lines)


def shown(data: dict) -> bool:
    """Whether a batch Ray sends the driver reaches the console. A worker's output does when it holds a problem; a
    message of the cluster's error channel (`pid` "raylet", not `is_err`: a task that failed, a worker killed for
    memory) does unless it only reports actors killed on purpose (Serve's own shutdown kills its controller)."""
    lines = [str(line) for line in data.get("lines", ())]
    if data.get("pid") == "raylet" and not data.get("is_err"):
        return not all(KILLED_ON_PURPOSE in line for line in lines)
    return is_problem(lines)


def draw_progress_with(draw) -> None:
    """`draw(line)` draws a worker's progress-bar line (vidgen's training and fine-tuning bars) on the console."""
    global _draw_progress
    _draw_progress = draw


def worker_output(data: dict, ignore_prefix: bool = False) -> None:
    """Ray's handler for what it sends the driver: a batch of one worker's (or the raylet's) output lines, as Ray's
    log monitor and error channel publish them (`lines`, `pid`, `actor_name`, `task_name`, `is_err`). Progress-bar
    lines are drawn; every other line goes to the log file, and the batch to the console when `shown`.
    `ignore_prefix` is Ray's, unused."""
    who = data.get("actor_name") or data.get("task_name") or ""
    prefix = f"({who} pid={data.get('pid')})" if who or data.get("pid") not in ("raylet", "autoscaler") \
        else f"({data.get('pid')})"
    lines = []
    for line in map(str, data.get("lines", ())):
        if PROGRESS_TOKEN in line and _draw_progress is not None:
            _draw_progress(line)
        else:
            lines.append(line)
    if not lines:
        return
    data = {**data, "lines": lines}
    handler = _handler()
    with _lock:
        for line in lines:
            handler.stream.write(f"{prefix} {line}\n")
        handler.flush()
    if shown(data):
        sys.stderr.write("".join(f"{prefix} {line}\n" for line in lines))
        sys.stderr.flush()


def filter_native_stderr() -> None:
    """Send lines of Ray's C++ logger written to this process's stderr (fd 2) to the log file; pass everything else
    through to the console unchanged. Done once, before Ray starts in this process."""
    if not routing() or getattr(filter_native_stderr, "done", False):
        return
    filter_native_stderr.done = True
    sys.stderr.flush()
    console = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, console), name="vidgen-stderr", daemon=True)
    pump.start()

    def restore() -> None:  # at exit: the console gets fd 2 back, and the pump drains what is left
        sys.stderr.flush()
        os.dup2(console, 2)
        pump.join(timeout=2)

    atexit.register(restore)


def _pump(read_end: int, console: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as pipe, os.fdopen(console, "wb", buffering=0, closefd=False) as out:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                _native_or_console(line + b"\n", out)
            if pending and not pending.startswith(b"["):  # a spinner's or a prompt's partial line: not Ray's
                out.write(pending)
                pending = b""
        if pending:
            _native_or_console(pending, out)


def _native_or_console(line: bytes, out) -> None:
    """A line of Ray's C++ logger to the log file, any other to the console. Whatever the file does (a full disk, a
    folder that cannot be made), the line reaches the console instead: the pump must never stop, since a stopped pump
    leaves fd 2's pipe to fill and every later write to stderr to block."""
    if NATIVE_LINE.match(line):
        try:
            handler = _handler()
            with _lock:
                handler.stream.write(line.decode("utf-8", "replace"))
                handler.flush()
            return
        except OSError:
            pass
    out.write(line)
