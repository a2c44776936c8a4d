"""Shards: deterministic tars, and every kind of damage named by shard and sample key."""

import json

import pytest

from storage.shards import Index, Sample, ShardError, VerifiedSample, build_shard, verified_samples


def _samples(n=3):
    return [Sample(f"train-{i:07d}", bytes([i]) * (700 + i), {"caption": f"clip {i}", "content_sha256": f"{i:064x}",
                                                            "group": "red/circle/left"}) for i in range(n)]


def test_build_is_deterministic_and_every_sample_verifies():
    data, entry = build_shard(_samples(), "train", 0)
    again, _ = build_shard(_samples(), "train", 0)
    assert data == again and entry.name == "train-00000.tar" and entry.bytes == len(data)
    results = list(verified_samples(data, entry))
    assert [r.key for r in results] == ["train-0000000", "train-0000001", "train-0000002"]
    assert all(isinstance(r, VerifiedSample) for r in results)
    assert results[1].mp4 == b"\x01" * 701 and results[1].meta["caption"] == "clip 1"
    assert results[1].meta["sha256"] == entry.samples[1].mp4_sha256  # the json carries its mp4's hash


def _flip(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0x01
    return bytes(damaged)


def test_a_flipped_byte_in_a_video_names_its_sample_and_spares_the_rest():
    data, entry = build_shard(_samples(), "train", 0)
    offset = data.index(b"\x01" * 701) + 5  # inside the second sample's mp4
    results = list(verified_samples(_flip(data, offset), entry))
    bad = [r for r in results if isinstance(r, ShardError)]
    assert [r.key for r in results if isinstance(r, VerifiedSample)] == ["train-0000000", "train-0000002"]
    assert len(bad) == 1 and "train-00000.tar" in str(bad[0]) and "'train-0000001'" in str(bad[0])
    assert ".mp4 whose sha256 does not match" in str(bad[0])


def test_an_edited_caption_is_caught():
    data, entry = build_shard(_samples(), "train", 0)
    edited = data.replace(b'"clip 2"', b'"clip 9"')
    [bad] = [r for r in verified_samples(edited, entry) if isinstance(r, ShardError)]
    assert "'train-0000002'" in str(bad) and ".json" in str(bad)


def test_a_truncated_shard_and_a_missing_sample_are_named():
    data, entry = build_shard(_samples(), "train", 0)
    [bad] = list(verified_samples(data[:700], entry))
    assert "train-00000.tar" in str(bad)
    short, _ = build_shard(_samples(2), "train", 0)
    problems = [str(r) for r in verified_samples(short, entry) if isinstance(r, ShardError)]
    assert any("'train-0000002' is missing" in p for p in problems)


def test_keys_with_dots_are_refused():
    with pytest.raises(ValueError, match="may not contain"):
        build_shard([Sample("a.b", b"x", {})], "train", 0)


def test_index_round_trips_and_refuses_other_formats():
    _, entry = build_shard(_samples(), "train", 0)
    index = Index([entry], card_sha256="0" * 64)
    back = Index.from_json(index.to_json(), "index.json")
    assert back == index and back.num_samples == 3 and back.counts() == {"train": 3}
    with pytest.raises(ShardError, match="format 'other'"):
        Index.from_json(json.dumps({"format": "other"}).encode(), "x/index.json")
    with pytest.raises(ShardError, match="not a readable data set index"):
        Index.from_json(b"{not json", "x/index.json")
