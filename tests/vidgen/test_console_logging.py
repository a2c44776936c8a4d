"""Issue 29, item 3: by default a person sees vidgen's progress, summaries and real problems; Ray's, Serve's and
other libraries' chatter goes to the command's log file, and a worker's traceback or ERROR still reaches the
console."""

import logging
import subprocess
import sys

import pytest

from vidgen import console_logging

SERVE_SHUTDOWN = ("Task ServeController.graceful_shutdown failed. There are infinite retries remaining, so the task "
                  "will be retried. Error: The actor is dead because it was killed by `ray.kill`.")
NATIVE = ("[2026-12-05 22:27:54,211 E 20533 20533] core_worker.cc:2465: Actor with class name: "
          "'MapWorker(MapBatches(Renderer))' has constructor arguments in the object store and max_restarts > 0.")


@pytest.fixture
def routed(tmp_path, monkeypatch):
    """Routing on, as `vidgen COMMAND` without --verbose has it, into tmp_path/vidgen.log; loggers restored after."""
    saved = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).propagate,
                    logging.getLogger(name).level) for name in console_logging.LIBRARY_LOGGERS}
    monkeypatch.setattr(console_logging, "_log_path", tmp_path / "vidgen.log")
    monkeypatch.setattr(console_logging, "_verbose", False)
    monkeypatch.setattr(console_logging, "_file_handler", None)
    yield tmp_path / "vidgen.log"
    if console_logging._file_handler is not None:
        console_logging._file_handler.close()
    for name, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate, logger.level = handlers, propagate, level


@pytest.mark.parametrize(("data", "shown"), [
    ({"pid": 7, "actor_name": "ServeController", "is_err": True,
      "lines": ["INFO 2026-12-05 controller 7 -- Deploying new version of Deployment(name='Router')"]}, False),
    ({"pid": 7, "actor_name": "ServeController", "is_err": True,
      "lines": ["WARNING controller 7 -- Cannot deregister autoscaling state for deployment Router"]}, False),
    ({"pid": 9, "task_name": "train_fn", "is_err": False,
      "lines": ["[INFO] DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully"]}, False),
    ({"pid": "raylet", "is_err": False, "lines": [SERVE_SHUTDOWN]}, False),
    ({"pid": 9, "actor_name": "MapWorker(MapBatches(Renderer))", "is_err": True,
      "lines": ["Traceback (most recent call last):", '  File "render.py", line 3', "ValueError: bad row"]}, True),
    ({"pid": 9, "task_name": "train_fn", "is_err": True, "lines": ["2026-12-05 ERROR vidgen: shard 3 is corrupt"]},
     True),
    ({"pid": "raylet", "is_err": False, "lines": ["Task was killed due to the node running low on memory."]}, True),
])
def test_only_problems_of_workers_reach_the_console(routed, capsys, data, shown):
    console_logging.worker_output(data)
    err = capsys.readouterr().err
    assert (data["lines"][-1] in err) == shown
    assert data["lines"][-1] in routed.read_text()  # every line is in the log file


def test_library_loggers_write_to_the_log_file_and_only_errors_to_the_console(routed, capsys):
    console_logging.route_library_loggers()
    logging.getLogger("ray.serve").info('Connecting to existing Serve app in namespace "serve".')
    logging.getLogger("ray._private.authentication").warning("Token authentication is enabled for this Ray cluster.")
    logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled.")
    logging.getLogger("ray.data").error("the dataset failed: shard 3")
    err = capsys.readouterr().err
    assert "Connecting" not in err and "Token authentication" not in err and "Progress bars" not in err
    assert "the dataset failed: shard 3" in err
    logged = routed.read_text()
    assert all(s in logged for s in ("Connecting to existing", "Token authentication", "Progress bars disabled",
                                     "the dataset failed"))


def test_a_library_user_keeps_the_libraries_own_output():
    assert not console_logging.routing()  # only the CLI's entry point turns routing on
    console_logging.route_library_loggers()
    assert not any(isinstance(h, console_logging._LazyFileHandler) for h in logging.getLogger("ray").handlers)


def test_lines_of_rays_cpp_logger_on_stderr_go_to_the_log_file_and_the_rest_to_the_console(tmp_path):
    """Ray's C++ core worker writes to file descriptor 2 of the driver, below Python's logging."""
    log = tmp_path / "vidgen.log"
    script = f"""
import os, sys
from pathlib import Path
from vidgen import console_logging
console_logging.start(Path({str(log)!r}), verbose=False)
console_logging.filter_native_stderr()
os.write(2, {NATIVE.encode()!r} + b"\\n")
print("error: --steps must be at least 1", file=sys.stderr)
os.write(2, b"spinner without a newline")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "core_worker.cc" not in done.stderr
    assert "error: --steps must be at least 1" in done.stderr and "spinner without a newline" in done.stderr
    assert "core_worker.cc:2465" in log.read_text()


def test_verbose_routes_nothing(tmp_path):
    script = f"""
import logging
from pathlib import Path
from vidgen import console_logging
console_logging.start(Path({str(tmp_path / 'v.log')!r}), verbose=True)
console_logging.route_library_loggers()
logging.getLogger("ray.serve").warning("Cannot deregister autoscaling state")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "Cannot deregister autoscaling state" in done.stderr and not (tmp_path / "v.log").exists()


def test_a_workers_progress_bar_is_drawn_not_logged(routed, monkeypatch, capsys):
    drawn = []
    monkeypatch.setattr(console_logging, "_draw_progress", drawn.append)
    bar = '{"__magic_token__": "__ray_tqdm_magic_token__", "x": 6, "desc": "step 6 loss 1.3650", "total": 6}'
    console_logging.worker_output({"pid": 3, "actor_name": "RayTrainWorker", "is_err": False, "lines": [bar]})
    assert drawn == [bar] and not routed.exists() and capsys.readouterr().err == ""


def test_a_log_file_that_cannot_be_written_sends_rays_native_lines_to_the_console(routed, tmp_path, monkeypatch):
    import io

    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setattr(console_logging, "_log_path", tmp_path / "a-file" / "vidgen.log")  # mkdir fails
    console = io.BytesIO()
    console_logging._native_or_console(NATIVE.encode() + b"\n", console)  # the stderr pump must not die on it
    assert console.getvalue() == NATIVE.encode() + b"\n"
