"""Shared fixtures: the text encoder, a micro model, a loopback S3 server and one local Ray cluster per session."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

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
    from vidgen.pipelines import train_to_folder
    from vidgen.training import SamplerConfig, TrainConfig

    cfg = TrainConfig(model=MICRO, max_steps=40, batch_size=8, warmup_steps=5, eval_clips=4, autoencoder_steps=30,
                      sampler=SamplerConfig(steps=4))
    out = tmp_path_factory.mktemp("micro-model")
    summary = train_to_folder(cfg, out, encoder=encoder)
    return out, summary


# --- object storage: a real S3 endpoint (moto's server) on 127.0.0.1, with credentials checked ---


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server in its own process, enforcing IAM: only the key made here is let in.

    `INITIAL_NO_AUTH_ACTION_COUNT=3` lets exactly the three IAM calls below through unauthenticated.
    """
    import boto3

    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bootstrap",
                           aws_secret_access_key="bootstrap")
        iam.create_user(UserName="vidgen-tests")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="vidgen-tests", PolicyName="all", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="vidgen-tests")["AccessKey"]
        yield {"endpoint_url": endpoint, "access_key_id": key["AccessKeyId"],
               "secret_access_key": key["SecretAccessKey"]}
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def s3_config(s3_server):
    from storage.objectstore import S3Config

    return S3Config(**s3_server, region="us-east-1", max_attempts=2)


@pytest.fixture
def bucket(s3_config):
    """A fresh, empty bucket on the loopback server: its `s3://` URI."""
    from storage.objectstore import ObjectStore

    uri = f"s3://test-{uuid.uuid4().hex[:12]}"
    ObjectStore(s3_config).ensure_bucket(uri)
    return uri


# --- Ray: one local cluster for the whole session, started here and shut down here ---


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    temp_dir = tempfile.mkdtemp(prefix="vidgen-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    ray.init(address="local", num_cpus=2, object_store_memory=256 * 2**20, include_dashboard=False,
             _temp_dir=temp_dir, logging_level="warning", log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
