"""Shared fixtures: the text encoder, a micro model, a loopback S3 server and one local Ray cluster per session."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Per-user state (registry, run keys, cluster files) of the test session, not of the person running it.
os.environ.setdefault("VIDGEN_HOME", tempfile.mkdtemp(prefix="vidgen-home-"))
os.environ.setdefault("VIDGEN_CACHE", tempfile.mkdtemp(prefix="vidgen-cache-"))

# A model far smaller than `tiny` (same world, same code paths) so unit tests stay fast.
MICRO = {"dim": 48, "depth": 2, "heads": 2, "ae_channels": 8}


@pytest.fixture(scope="session")
def encoder():
    from vidgen.text import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def micro_config():
    from vidgen.model import ModelConfig

    return ModelConfig(**MICRO)


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, encoder):
    """A micro model trained for 40 steps and written as a model folder by the real pipeline."""
    from vidgen.diffusion import SamplerConfig
    from vidgen.runs.local_training import train_to_folder
    from vidgen.training import TrainConfig

    cfg = TrainConfig(model=MICRO, max_steps=40, batch_size=8, warmup_steps=5, eval_clips=4, autoencoder_steps=30,
                      sampler=SamplerConfig(steps=4))
    out = tmp_path_factory.mktemp("micro-model")
    summary = train_to_folder(cfg, out, encoder=encoder)
    return out, summary


@pytest.fixture(scope="session")
def tiny_pipelines(tmp_path_factory) -> dict:
    """{kind: folder} of tiny random-weight Wan, LTX-Video and CogVideoX pipelines, saved by `save_pretrained` as a
    user's own script would (examples/tiny_pipelines.py, nothing downloaded)."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "tiny_pipelines.py"
    spec = importlib.util.spec_from_file_location("tiny_pipelines", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("pipelines")
    return {kind: module.save_tiny_pipeline(kind, root / f"tiny-{kind}") for kind in module.KINDS}


# --- object storage: a real S3 endpoint (moto's server) on 127.0.0.1, with credentials checked ---


@pytest.fixture(scope="session")
def s3_config():
    """The S3Config of a loopback S3 server that lives for the whole session."""
    from cluster.launcher import free_ports
    from storage.loopback import LoopbackS3

    with LoopbackS3(free_ports(1)[0]) as server:
        yield server.config


@pytest.fixture
def bucket(s3_config):
    """A fresh, empty bucket on the loopback server: its `s3://` URI."""
    from storage.objectstore import ObjectStore

    uri = f"s3://test-{uuid.uuid4().hex[:12]}"
    ObjectStore(s3_config).ensure_bucket(uri)
    return uri


@pytest.fixture(params=["file", "s3"])
def store_root(request, tmp_path, s3_config):
    """(store, root URI): a local folder given as a plain path, and a prefix in a fresh bucket."""
    from storage.objectstore import ObjectStore

    if request.param == "file":
        return ObjectStore(), str(tmp_path / "root")
    store = ObjectStore(s3_config)
    uri = f"s3://root-{uuid.uuid4().hex[:10]}"
    store.ensure_bucket(uri)
    return store, uri + "/prefix"


# --- Ray: one local cluster for the whole session, started here and shut down here ---


@pytest.fixture(scope="session")
def ray_cluster(s3_config):
    import ray

    # The node's own credentials, as an operator gives a cluster's nodes theirs (environment at start): Ray never
    # carries them to tasks and actors.
    os.environ.update(s3_config.credentials_env())
    temp_dir = tempfile.mkdtemp(prefix="vidgen-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    # 3 CPU slots on 2 cores: two training workers and the Ray Data stream that feeds them; `edge` and `cloud` for
    # the serving tiers' replicas (two edge replicas at most, one cloud)
    ray.init(address="local", num_cpus=3, resources={"edge": 2, "cloud": 1}, object_store_memory=256 * 2**20,
             include_dashboard=False,
             _temp_dir=temp_dir, logging_level="warning", log_to_driver=False)
    from jobs.connection import configure_data_context

    configure_data_context()
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_dataset(ray_cluster, s3_config):
    """2000 clips prepared on the loopback S3 endpoint, as `vidgen data prepare --n 2000 --out s3://…` does."""
    from jobs.prepare import PrepareConfig, prepare

    uri = f"s3://data-{uuid.uuid4().hex[:10]}/shapes"
    cfg = PrepareConfig(n=2000, out=uri, samples_per_shard=200, s3=s3_config)
    return uri, cfg, prepare(cfg)


# --- a real `ray start --head` on free loopback ports, for the Jobs API and autoscaler tests ---


class RayHead:
    """A head node started by `ray start --head` with its own ports, temp dir and auth token."""

    def __init__(self, tmp_path, *extra_args: str, env: dict | None = None, num_cpus: int = 2,
                 autoscaling_config: dict | None = None):
        import secrets
        import subprocess
        import sys
        from pathlib import Path

        from cluster.launcher import free_ports

        self.temp_dir = tempfile.mkdtemp(prefix="vg-head-", dir="/tmp")  # short: socket paths must fit 107 chars
        self.token_file = tmp_path / "ray_token"
        self.token_file.write_text(secrets.token_hex(16))
        bin_dir = str(Path(sys.executable).parent)
        # The token is read when Ray is imported; `python` of submitted jobs must be this environment's.
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                    "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", **(env or {})}
        (gcs, dashboard, client, agent_http, agent_grpc, runtime_env, metrics, node_manager,
         object_manager) = free_ports(9)
        self.gcs_address = f"127.0.0.1:{gcs}"
        self.dashboard = f"http://127.0.0.1:{dashboard}"
        if autoscaling_config is not None:  # the real autoscaler, with simulated nodes (cluster/local.yaml)
            from cluster.launcher import local_autoscaling_config, local_head_environment

            path = local_autoscaling_config(autoscaling_config, self.gcs_address, tmp_path)
            extra_args = (*extra_args, f"--autoscaling-config={path}")
            self.env.update(local_head_environment())
        command = [f"{bin_dir}/ray", "start", "--head", f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1",
                   f"--port={gcs}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                   f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
                   f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
                   f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
                   f"--node-manager-port={node_manager}", f"--object-manager-port={object_manager}",
                   "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={self.temp_dir}",
                   "--disable-usage-stats", *extra_args]
        subprocess.run(command, env=self.env, check=True, timeout=180, capture_output=True)

    def stop(self) -> None:
        """Stop this head's processes (found by its temp dir) and their children, by PID."""
        from cluster.launcher import stop_local

        stop_local(self.temp_dir)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A plain head with a dashboard (Jobs API) on 127.0.0.1, for the module's tests."""
    head = RayHead(tmp_path_factory.mktemp("head"))
    try:
        yield head
    finally:
        head.stop()


@pytest.fixture(scope="session")
def ray_head_class():
    """RayHead itself, for tests that start a head with their own flags (e.g. an autoscaling config)."""
    return RayHead
