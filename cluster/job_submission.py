"""vidgen's jobs on a cluster through the Ray Jobs API: submit `python -m jobs.NAME ARGS` with this repository as
the working_dir, list, follow, stop. Nothing here schedules anything: Ray's job manager does.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
from pathlib import Path

from jobs.connection import ClusterConnectionError, Target

REPO_ROOT = Path(__file__).resolve().parents[1]
# What the working_dir upload leaves out: environments, credentials files, data, outputs and caches; never code or
# shipped models.
EXCLUDES = [".venv", ".git", ".env", "*.env", ".env.*", "data", "out", "runs", ".pytest_cache", ".ruff_cache",
            "__pycache__", "*.egg-info", "*.pyc"]
# A file whose text gives one of these a value holds a credential: it must not travel with the job (the cluster's
# nodes take credentials from their own environment or role).
SECRET_KEYS = re.compile(r"(secret_access_key|session_token)[\"']?\s*[:=]\s*(?!null\b|none\b|~)[\"']?[^\s\"',}]",
                         re.IGNORECASE)
SCANNED = (".yaml", ".yml", ".json", ".toml", ".cfg", ".ini")


def files_with_secrets(root: Path, excludes: list[str] = EXCLUDES) -> list[Path]:
    """Config files under `root` that an upload would carry and that hold a credential."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not any(fnmatch.fnmatch(d, pattern) for pattern in excludes)]
        for name in files:
            path = Path(folder, name)
            if (path.suffix in SCANNED and not any(fnmatch.fnmatch(name, pattern) for pattern in excludes)
                    and path.stat().st_size < 1 << 20 and SECRET_KEYS.search(path.read_text(errors="replace"))):
                found.append(path)
    return sorted(found)


def job_names() -> list[str]:
    """The job entrypoints under jobs/ (one module a job; private helpers start with _)."""
    return sorted(p.stem for p in (REPO_ROOT / "jobs").glob("*.py") if not p.stem.startswith("_"))


def entrypoint(job: str, args: list[str]) -> str:
    if job not in job_names():
        raise ValueError(f"unknown job {job!r}; the jobs are {', '.join(job_names())} (modules in jobs/)")
    return " ".join(["python", "-m", f"jobs.{job}", *map(shlex.quote, args)])


def client(target: Target):
    """A JobSubmissionClient for the target; an unreachable or refusing cluster is one clear error."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(target.address, headers=target.headers())
    except Exception as exc:  # ConnectionError, auth errors and RuntimeErrors from the SDK alike
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterConnectionError(f"could not reach the Ray cluster at {target.address} (from {target.source}): "
                                     f"{first}. Point at another with --address or RAY_ADDRESS; if it uses token "
                                     "auth, give its token with --token-file or RAY_AUTH_TOKEN_PATH") from None


def submit(target: Target, job: str, args: list[str]) -> str:
    """Submit jobs.JOB with ARGS; the repository travels as the working_dir. Returns the job id."""
    secrets = files_with_secrets(REPO_ROOT)
    if secrets:
        raise ValueError(f"{', '.join(str(p.relative_to(REPO_ROOT)) for p in secrets)} would travel with the job "
                         "and hold(s) a credential: remove it (the cluster's nodes read AWS_* from their own "
                         "environment) or move the file out of the repository")
    runtime_env = {"working_dir": str(REPO_ROOT), "excludes": EXCLUDES}
    return client(target).submit_job(entrypoint=entrypoint(job, args), runtime_env=runtime_env,
                                     metadata={"submitted_by": "vidgen", "job": job})


def describe(target: Target, job_id: str) -> dict:
    info = client(target).get_job_info(job_id)
    return {"job_id": job_id, "status": str(info.status.value), "entrypoint": info.entrypoint,
            "message": info.message, "error_type": info.error_type, "start_time": info.start_time,
            "end_time": info.end_time}


def list_jobs(target: Target) -> list[dict]:
    """Submitted jobs (not the drivers that connect directly, such as `vidgen cluster status` itself)."""
    jobs = [j for j in client(target).list_jobs() if str(getattr(j.type, "value", j.type)) == "SUBMISSION"]
    return [{"job_id": j.submission_id or j.job_id, "status": str(j.status.value), "entrypoint": j.entrypoint,
             "start_time": j.start_time} for j in sorted(jobs, key=lambda j: j.start_time or 0)]


def logs(target: Target, job_id: str) -> str:
    return client(target).get_job_logs(job_id)


def follow(target: Target, job_id: str, write) -> None:
    """Call `write(chunk)` with the job's log as it grows, until the job ends."""
    import asyncio

    async def tail() -> None:
        async for chunk in client(target).tail_job_logs(job_id):
            write(chunk)

    asyncio.run(tail())


def stop(target: Target, job_id: str) -> bool:
    """Ask the job to stop; False when it had already ended."""
    return client(target).stop_job(job_id)
