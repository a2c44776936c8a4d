"""`jobs.prepare` on a real local Ray cluster, writing to the loopback S3 server and to a local folder."""

import json

import numpy as np
import pytest

from jobs.prepare import PrepareConfig, plan_shards, prepare, split_sizes
from storage.datasets import open_dataset, verify_dataset
from storage.objectstore import ObjectStore
from storage.shards import INDEX_FILE
from storage.stream import CorruptSampleError, ReaderConfig, read_dataset


@pytest.fixture(scope="module")
def s3_dataset(ray_cluster, s3_config, tmp_path_factory):
    """2000 clips prepared on the loopback S3 endpoint (as `vidgen data prepare --n 2000 --out s3://…` does)."""
    import uuid

    uri = f"s3://data-{uuid.uuid4().hex[:10]}/shapes"
    cfg = PrepareConfig(n=2000, out=uri, samples_per_shard=200, s3=s3_config)
    summary = prepare(cfg)
    return uri, cfg, summary


def test_splits_and_shard_plan_cover_every_clip_once():
    cfg = PrepareConfig(n=1000, samples_per_shard=64)
    sizes = split_sizes(cfg)
    assert sizes == {"train": 900, "eval": 50, "heldout": 50}
    plans = plan_shards(cfg)
    for split, size in sizes.items():
        covered = [i for p in plans if p["split"] == split for i in range(p["first"], p["first"] + p["count"])]
        assert covered == list(range(size))
    with pytest.raises(ValueError, match="no training clips"):
        split_sizes(PrepareConfig(n=10, eval_fraction=0.5, heldout_fraction=0.5))


def test_prepare_writes_a_verified_data_set_to_s3(s3_dataset, s3_config):
    uri, cfg, summary = s3_dataset
    assert summary["samples"] == 2000 and summary["splits"] == {"train": 1800, "eval": 100, "heldout": 100}
    store = ObjectStore(s3_config)
    dataset = open_dataset(store, uri)
    assert dataset.card["license"] == "cc0-1.0" and dataset.card["splits"] == summary["splits"]
    assert dataset.card["generator_version"] == "shapes-v1" and len(dataset.card["heldout_groups"]) == 6
    assert verify_dataset(store, uri) == []


def test_stream_yields_exactly_the_prepared_samples(s3_dataset, s3_config):
    uri, _, _ = s3_dataset
    ds = read_dataset(uri, ReaderConfig(splits=None, s3=s3_config))
    keys, captions, shapes = [], [], set()
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        keys += list(batch["key"])
        captions += list(batch["caption"])
        shapes.add(batch["video"].shape[1:])
        assert batch["video"].dtype == np.float32 and -1.0 <= batch["video"].min() <= batch["video"].max() <= 1.0
    index = open_dataset(ObjectStore(s3_config), uri).index
    assert sorted(keys) == sorted(s.key for shard in index.shards for s in shard.samples)
    assert len(keys) == 2000 and shapes == {(8, 32, 32, 3)}
    assert all(isinstance(c, str) and c for c in captions)
