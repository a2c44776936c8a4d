"""Which cluster and token a command uses: flags, then the environment, then the config file, then Ray's default."""

import pytest

from jobs.connection import ClusterConnectionError, find_token, resolve


def test_address_and_token_precedence(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    config = tmp_path / "cluster.yaml"
    config.write_text(f"address: 10.0.0.5:8265\ntoken_file: {tmp_path / 'config-token'}\n")
    (tmp_path / "config-token").write_text("from-config")
    env = {"VIDGEN_CLUSTER_CONFIG": str(config)}

    target = resolve(environ=env)
    assert (target.address, target.token, target.source) == ("http://10.0.0.5:8265", "from-config", str(config))
    target = resolve(environ={**env, "RAY_ADDRESS": "http://head:8265/", "RAY_AUTH_TOKEN_PATH": str(token_file)})
    assert (target.address, target.token, target.source) == ("http://head:8265", "from-file", "RAY_ADDRESS")
    target = resolve("http://flag:8265", str(token_file), environ={**env, "RAY_AUTH_TOKEN": "from-env"})
    assert (target.address, target.token) == ("http://flag:8265", "from-file")
    assert target.headers() == {"Authorization": "Bearer from-file"}
    assert find_token(environ={**env, "RAY_AUTH_TOKEN": "from-env"}) == ("from-env", "RAY_AUTH_TOKEN")


def test_missing_pieces_are_one_line_errors(tmp_path):
    with pytest.raises(ClusterConnectionError, match="no cluster given: pass --address"):
        resolve(environ={"VIDGEN_CLUSTER_CONFIG": str(tmp_path / "none.yaml")})
    with pytest.raises(ClusterConnectionError, match="cannot read the Ray token file .*missing"):
        resolve("http://h:8265", str(tmp_path / "missing"), environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("adress: typo\n")
    with pytest.raises(ClusterConnectionError, match="only the keys address and token_file"):
        resolve(environ={"VIDGEN_CLUSTER_CONFIG": str(bad)})


def test_a_submission_never_carries_credentials_files(tmp_path):
    from cluster.job_submission import EXCLUDES, files_with_secrets

    assert {".env", "data", "out", "runs", ".git", ".venv"} <= set(EXCLUDES)
    (tmp_path / "job.yaml").write_text("data: s3://bucket/shapes\ns3:\n  secret_access_key: abc123\n")
    (tmp_path / "creds.json").write_text('{"s3": {"session_token": "tok"}}')
    (tmp_path / "plain.yaml").write_text("data: s3://bucket/shapes\ns3:\n  secret_access_key: null\n# no secret\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "other.yaml").write_text("secret_access_key: x\n")  # excluded from the upload anyway
    assert [p.name for p in files_with_secrets(tmp_path)] == ["creds.json", "job.yaml"]


def test_a_batch_jobs_local_ray_runs_without_the_dashboard():
    """The batch jobs start their local Ray with `dashboard=False` (its start is ~2 s of a short render on 2 cores):
    a real local start in a fresh process, asked the same way, serves no dashboard (Ray keeps a head process for
    usage stats only, with its frontend off)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    probe = ("import psutil, ray\n"
             "from jobs.connection import connect_ray\n"
             "connect_ray(None, num_cpus=1, dashboard=False)\n"
             "node = ray._private.worker.global_worker.node\n"
             "served = [p for p in psutil.Process().children(recursive=True)\n"
             "          if any('dashboard/dashboard.py' in part for part in p.cmdline())\n"
             "          and '--disable-frontend' not in p.cmdline()]\n"
             "print(repr(node.webui_url), len(served))\n"
             "ray.shutdown()\n")
    temp_dir = tempfile.mkdtemp(prefix="vg-dash-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "RAY_TMPDIR": temp_dir})
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] in (["None", "0"], ["''", "0"]), done.stdout
