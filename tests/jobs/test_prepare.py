"""`jobs.prepare` on a real local Ray cluster, writing to the loopback S3 server and to a local folder."""


import numpy as np
import pytest

from jobs.prepare import PrepareConfig, plan_shards, split_sizes
from storage.datasets import open_dataset, verify_dataset
from storage.objectstore import ObjectStore
from storage.stream import ReaderConfig, read_dataset


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


@pytest.fixture
def damaged_copy(s3_dataset, s3_config):
    """A copy of the S3 data set with one byte flipped in the first sample of its second train shard."""
    uri, _, _ = s3_dataset
    store = ObjectStore(s3_config)
    copy = uri + "-damaged"
    for obj in store.list(uri + "/"):
        store.write(copy + obj.uri.removeprefix(uri), store.read(obj.uri))
    entry = open_dataset(store, copy).index.shards[1]
    shard_uri = f"{copy}/shards/{entry.name}"
    data = bytearray(store.read(shard_uri))
    data[512 + 200] ^= 0x01  # inside the first member (the first sample's mp4)
    store.write(shard_uri, bytes(data))
    return copy, entry.name, entry.samples[0].key


def test_verify_names_the_flipped_byte(damaged_copy, s3_config):
    copy, shard, key = damaged_copy
    [problem] = verify_dataset(ObjectStore(s3_config), copy)
    assert shard in problem and repr(key) in problem


def test_stream_skips_the_damaged_sample_or_fails_naming_it(damaged_copy, s3_config):
    copy, shard, key = damaged_copy
    keys = [k for b in read_dataset(copy, ReaderConfig(splits=None, s3=s3_config)).iter_batches(
        batch_size=500, batch_format="numpy") for k in b["key"]]
    assert len(keys) == 1999 and key not in keys
    with pytest.raises(Exception, match=rf"{shard} sample '{key}'.*on_corrupt='fail'"):
        read_dataset(copy, ReaderConfig(splits=None, on_corrupt="fail", s3=s3_config)).materialize()


def test_stream_splits_disjointly_per_worker_and_reads_one_split(s3_dataset, s3_config):
    uri, _, _ = s3_dataset
    ds = read_dataset(uri, ReaderConfig(splits=["heldout"], video_dtype="uint8", s3=s3_config))
    left, right = ds.streaming_split(2, equal=True)

    def keys(it):
        return [k for b in it.iter_batches(batch_size=16, batch_format="numpy") for k in b["key"]]

    import threading

    got = {}
    threads = [threading.Thread(target=lambda n, it: got.__setitem__(n, keys(it)), args=(n, it))
               for n, it in (("left", left), ("right", right))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got["left"]) == len(got["right"]) == 50
    assert not set(got["left"]) & set(got["right"])
    assert all(k.startswith("heldout-") for k in got["left"] + got["right"])


def test_cli_prepare_then_verify_a_local_folder(ray_cluster, tmp_path):
    from typer.testing import CliRunner

    from vidgen.cli import app

    out = tmp_path / "cli-data"
    runner = CliRunner()
    result = runner.invoke(app, ["data", "prepare", "--n", "100", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 100 clips (train 90, eval 5, heldout 5)" in result.output and str(out) in result.output
    again = runner.invoke(app, ["data", "prepare", "--n", "100", "--out", str(out)])
    assert again.exit_code == 1 and "already holds a data set" in again.output
    assert runner.invoke(app, ["data", "verify", str(out)]).exit_code == 0
    shard = next((out / "shards").glob("eval-*.tar"))
    data = bytearray(shard.read_bytes())
    data[700] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = runner.invoke(app, ["data", "verify", str(out)])
    assert bad.exit_code == 1 and shard.name in bad.output and "'eval-0000000'" in bad.output
    unknown = runner.invoke(app, ["data", "verify", "gs://bucket/x"])
    assert unknown.exit_code == 1 and "unknown URI scheme 'gs'" in unknown.output


def test_job_entrypoint_reads_a_yaml_config(ray_cluster, tmp_path):
    from jobs.prepare import main

    out = tmp_path / "from-yaml"
    config = tmp_path / "prepare.yaml"
    config.write_text(f"n: 40\nout: {out}\nsamples_per_shard: 16\nseed: 3\n")
    assert main(["--config", str(config)]) == 0
    dataset = open_dataset(ObjectStore(), str(out))
    assert dataset.index.num_samples == 40 and dataset.card["seed"] == 3
    with pytest.raises(ValueError, match="no shards of splits"):
        read_dataset(str(out), ReaderConfig(splits=["validation"]))
    config.write_text("n: 40\nnum_clips: 3\n")
    with pytest.raises(ValueError, match="num_clips"):
        main(["--config", str(config)])
