"""The shard reader refuses samples whose bytes match the index but are no usable clip, through on_corrupt."""

import numpy as np
import pytest

from storage import video
from storage.shards import Sample, build_shard
from storage.stream import CorruptSampleError, _decode_shards
from vidgen import synth

SHAPE = (8, 32, 32)


def _shard(samples: list[Sample]) -> tuple[dict, dict]:
    data, entry = build_shard(samples, "train", 0)
    return {"path": np.array([f"shards/{entry.name}"]), "bytes": np.array([data], dtype=object)}, {entry.name: entry}


@pytest.fixture(scope="module")
def hostile_shard():
    spec = synth.sample_specs(1, seed=3)[0]
    good = video.encode(synth.render(spec), "mp4")
    small = video.encode(synth.render(synth.sample_specs(1, seed=3, height=16, width=16)[0]), "mp4")
    script = b"ffconcat version 1.0\nfile '/etc/hostname'\n"  # FFmpeg would follow it, were the format guessed
    return _shard([Sample("good", good, {"caption": spec.caption}),
                   Sample("script", script, {"caption": "a red square moving up"}),
                   Sample("nocaption", good, {"licence": "cc0"}),
                   Sample("small", small, {"caption": "a red square moving up"}),
                   Sample("notvideo", b"\x00" * 300, {"caption": "a red square moving up"})])


def test_only_usable_samples_come_through(hostile_shard, caplog):
    batch, entries = hostile_shard
    blocks = list(_decode_shards(batch, entries, "skip", "uint8", SHAPE))
    assert [list(b["key"]) for b in blocks] == [["good"]] and blocks[0]["video"].shape == (1, *SHAPE, 3)
    skipped = " ".join(r.getMessage() for r in caplog.records)
    for key in ("script", "nocaption", "small", "notvideo"):
        assert f"sample {key}" in skipped
    assert "no caption" in skipped and "a 8x16x16 clip in a data set of 8x32x32 clips" in skipped


def test_with_on_corrupt_fail_the_first_bad_sample_stops_the_run_by_name(hostile_shard):
    batch, entries = hostile_shard
    with pytest.raises(CorruptSampleError, match=r"shard train-00000\.tar sample script: not a readable mp4"):
        list(_decode_shards(batch, entries, "fail", "uint8", SHAPE))
