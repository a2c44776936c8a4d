"""`vidgen submit` and `vidgen jobs …` against a real head (`ray start --head` on free loopback ports, token auth)."""

import time

import pytest
import yaml
from typer.testing import CliRunner

from vidgen.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def vidgen(head, *args: str):
    """Run the CLI in this process with the head's address and token, as a user's shell would have them."""
    return runner.invoke(app, list(args), env={"RAY_ADDRESS": head.dashboard,
                                               "RAY_AUTH_TOKEN_PATH": str(head.token_file)})


def wait_for_status(head, job_id: str, wanted: set[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        result = vidgen(head, "jobs", "status", job_id)
        assert result.exit_code == 0, result.output
        status = result.output.split(":", 2)[1].split()[0]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in wanted:
            return result.output, seen
        time.sleep(0.5)
    raise AssertionError(f"{job_id} never reached {wanted}; went through {seen}")


def submitted_id(result) -> str:
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("submitted "))
    assert "follow: vidgen jobs logs" in result.output
    return line.split()[1]


def test_short_job_runs_to_success_and_its_logs_come_back(ray_head, tmp_path):
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({"n": 12, "out": str(tmp_path / "data"), "samples_per_shard": 6}))
    job_id = submitted_id(vidgen(ray_head, "submit", "prepare", "--", "--config", str(config), "--address", "auto"))
    output, seen = wait_for_status(ray_head, job_id, {"SUCCEEDED", "FAILED"})
    assert "SUCCEEDED" in output, (output, vidgen(ray_head, "jobs", "logs", job_id).output)
    assert "RUNNING" in seen or "PENDING" in seen
    assert (tmp_path / "data" / "index.json").is_file()  # the job really ran, on the cluster
    logs = vidgen(ray_head, "jobs", "logs", job_id)
    assert logs.exit_code == 0 and "12" in logs.output
    # The job has ended: --follow prints all of it and returns. (CliRunner also catches stray lines of loggers left
    # on streams of earlier invocations, hence startswith.)
    followed = vidgen(ray_head, "jobs", "logs", job_id, "--follow")
    assert followed.exit_code == 0 and followed.output.startswith(logs.output)
    listed = vidgen(ray_head, "jobs", "list")
    assert job_id in listed.output and "python -m jobs.prepare" in listed.output


def test_long_job_is_stopped(ray_head, tmp_path):
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({"n": 200_000, "out": str(tmp_path / "big"), "samples_per_shard": 100}))
    job_id = submitted_id(vidgen(ray_head, "submit", "prepare", "--", "--config", str(config), "--address", "auto"))
    wait_for_status(ray_head, job_id, {"RUNNING"})
    stopped = vidgen(ray_head, "jobs", "stop", job_id)
    assert stopped.exit_code == 0 and "stop requested" in stopped.output
    output, _ = wait_for_status(ray_head, job_id, {"STOPPED", "SUCCEEDED", "FAILED"}, timeout_s=60)
    assert "STOPPED" in output
    assert not (tmp_path / "big" / "index.json").exists()


def test_failing_job_shows_failed_and_its_error(ray_head, tmp_path):
    job_id = submitted_id(vidgen(ray_head, "submit", "prepare", "--", "--config", str(tmp_path / "missing.yaml")))
    output, _ = wait_for_status(ray_head, job_id, {"SUCCEEDED", "FAILED"}, timeout_s=60)
    assert "FAILED" in output and "error:" in output
    assert "missing.yaml" in vidgen(ray_head, "jobs", "logs", job_id).output


def test_bad_targets_are_one_line_errors(ray_head, tmp_path):
    unknown = vidgen(ray_head, "submit", "nosuchjob")
    assert unknown.exit_code == 1 and "unknown job 'nosuchjob'" in unknown.output and "prepare" in unknown.output
    wrong_token = tmp_path / "wrong"
    wrong_token.write_text("not-the-token")
    refused = vidgen(ray_head, "jobs", "list", "--token-file", str(wrong_token))
    assert refused.exit_code == 1 and ray_head.dashboard in refused.output
    unreachable = runner.invoke(app, ["jobs", "list", "--address", "http://127.0.0.1:9"], env={"RAY_ADDRESS": ""})
    assert unreachable.exit_code == 1 and "could not reach the Ray cluster at http://127.0.0.1:9" in unreachable.output
    nothing = runner.invoke(app, ["jobs", "list"], env={"RAY_ADDRESS": "", "VIDGEN_CLUSTER_CONFIG": "/nonexistent"})
    assert nothing.exit_code == 1 and "no cluster given" in nothing.output


def test_plain_ray_job_submit_runs_the_same_entrypoint(ray_head, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({"n": 6, "out": str(tmp_path / "plain"), "samples_per_shard": 6}))
    out = subprocess.run([str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_head.dashboard,
                          "--working-dir", str(root), "--", "python", "-m", "jobs.prepare", "--config", str(config),
                          "--address", "auto"], env=ray_head.env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "succeeded" in out.stdout.lower()
    assert (tmp_path / "plain" / "index.json").is_file()
