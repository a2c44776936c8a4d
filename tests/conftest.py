"""Shared fixtures: the text encoder, a micro model, a loopback S3 server and one local Ray cluster per session."""

from __future__ import annotations

import os
import shutil
import tempfile
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


@pytest.fixture(scope="session")
def s3_config():
    """The S3Config of a loopback S3 server that lives for the whole session."""
    from storage.loopback import LoopbackS3

    with LoopbackS3() as server:
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
def ray_cluster():
    import ray

    temp_dir = tempfile.mkdtemp(prefix="vidgen-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    # 3 CPU slots on 2 cores: two training workers and the Ray Data stream that feeds them; `edge` and `cloud` for
    # the serving tiers' replicas (two edge replicas at most, one cloud)
    ray.init(address="local", num_cpus=3, resources={"edge": 2, "cloud": 1}, object_store_memory=256 * 2**20,
             include_dashboard=False,
             _temp_dir=temp_dir, logging_level="warning", log_to_driver=False)
    from jobs._ray import configure_data_context

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
