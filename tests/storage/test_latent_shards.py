"""A latent set on a local folder and on the loopback S3: written shard by shard and index last, found again by its
cache key, read back exactly, and refused (naming the shard) when a byte of a shard changes."""

import json
import re

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from storage.latent_shards import (
    INDEX_FILE,
    SHARD_FOLDER,
    CacheKey,
    LatentSetWriter,
    LatentShardError,
    find_latent_set,
    latent_set_location,
    open_latent_set,
    read_shard,
)
from storage.objectstore import NotFound

KEY = CacheKey("m" * 64, "d" * 64, (9, 32, 32), "Wan", 1)


def _rows(n: int, seed: int, latent_shape: tuple[int, ...], with_mask: bool):
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 2, (n, 6)).astype(np.int64) if with_mask else None
    return (rng.standard_normal((n, *latent_shape)).astype(np.float32),
            rng.standard_normal((n, 6, 8)).astype(np.float32), mask)


def _write_two_buckets(store, root):
    """A train bucket of 9x32x32 clips (with a text mask) and an eval bucket of 5x16x32 clips (without)."""
    writer = LatentSetWriter(store, root, KEY)
    train = _rows(3, 0, (4, 3, 4, 4), with_mask=True)
    writer.add_shard("train", (9, 32, 32), (3, 4, 4), ["a", "b", "c"], ["red", "green", "blue"], *train)
    held_out = _rows(2, 1, (4, 2, 2, 4), with_mask=False)
    writer.add_shard("eval", (5, 16, 32), (2, 2, 4), ["d", "e"], ["cyan", "pink"], *held_out)
    return writer, train, held_out


def test_a_latent_set_round_trips_and_the_same_key_finds_it(store_root):
    store, root = store_root
    assert find_latent_set(store, root, KEY) is None
    writer, train, held_out = _write_two_buckets(store, root)
    assert find_latent_set(store, root, KEY) is None  # shards but no index yet: not a cache hit
    writer.finish()

    found = find_latent_set(store, root, KEY)
    assert found is not None and found.location == latent_set_location(root, KEY)
    assert found.index.key == KEY and found.index.counts() == {"eval": 2, "train": 3}
    by_split = {s.split: s for s in found.index.shards}
    assert (by_split["train"].shape, by_split["train"].grid, by_split["train"].samples) == ((9, 32, 32), (3, 4, 4), 3)
    assert by_split["eval"].name == f"eval-5x16x32-00000-{by_split['eval'].sha256[:16]}.safetensors"
    shard = read_shard(store, found, by_split["train"])
    assert (shard.keys, shard.captions, shard.split) == (["a", "b", "c"], ["red", "green", "blue"], "train")
    for got, want in zip((shard.latents, shard.text_embeds, shard.text_mask), train, strict=True):
        assert np.array_equal(got, want) and got.dtype == want.dtype
    shard = read_shard(store, found, by_split["eval"])
    assert shard.text_mask is None and np.array_equal(shard.latents, held_out[0])
    # plain safetensors, loadable without vidgen
    raw = store.read(found.shard_uri(by_split["eval"]))
    assert set(load_safetensors(raw)) == {"latents", "text_embeds"}


def test_another_key_misses_the_cache(store_root):
    store, root = store_root
    _write_two_buckets(store, root)[0].finish()
    for other in (CacheKey("n" * 64, "d" * 64, (9, 32, 32), "Wan", 1), CacheKey("m" * 64, "d" * 64, None, "Wan", 1),
                  CacheKey("m" * 64, "d" * 64, (9, 32, 32), "Wan", 2),
                  CacheKey("m" * 64, "d" * 64, (9, 32, 32), "Wan", 1, "bfloat16")):
        assert other.digest() != KEY.digest()
        assert find_latent_set(store, root, other) is None


def test_a_flipped_byte_in_a_shard_is_refused_naming_the_shard(store_root):
    store, root = store_root
    latent_set = _write_two_buckets(store, root)[0].finish()
    entry = next(s for s in latent_set.index.shards if s.split == "train")
    uri = latent_set.shard_uri(entry)
    data = bytearray(store.read(uri))
    data[-5] ^= 0x01  # inside the last array: still parses as safetensors, only the checksum can tell
    store.write(uri, bytes(data))
    with pytest.raises(LatentShardError, match=rf"latent shard {re.escape(entry.name)} does not match its sha256"):
        read_shard(store, latent_set, entry)


def test_two_writers_of_one_key_leave_one_complete_readable_set(store_root):
    store, root = store_root
    first, late = LatentSetWriter(store, root, KEY), LatentSetWriter(store, root, KEY)
    rows = _rows(2, 0, (4, 3, 4, 4), with_mask=False)
    written = first.add_shard("train", (9, 32, 32), (3, 4, 4), ["a", "b"], ["red", "green"], *rows)
    first.finish()
    nudged = (rows[0] + np.float32(1e-7), *rows[1:])  # the same clips batched otherwise: last bits differ
    late.add_shard("train", (9, 32, 32), (3, 4, 4), ["a", "b"], ["red", "green"], *nudged)
    latent_set = late.finish()  # finds the index the first writer finished, whose shard it did not overwrite
    assert [s.sha256 for s in latent_set.index.shards] == [written.sha256]
    assert np.array_equal(read_shard(store, latent_set, latent_set.index.shards[0]).latents, rows[0])


def test_an_unfinished_set_is_reported_as_unfinished(tmp_path):
    from storage.objectstore import ObjectStore

    store = ObjectStore()
    _write_two_buckets(store, str(tmp_path))
    with pytest.raises(NotFound, match="unfinished latent set"):
        open_latent_set(store, latent_set_location(str(tmp_path), KEY))


def test_an_index_naming_a_path_outside_the_set_is_refused(tmp_path):
    from storage.objectstore import ObjectStore

    store = ObjectStore()
    location = _write_two_buckets(store, str(tmp_path))[0].finish().location
    index = json.loads(store.read(location.join(INDEX_FILE)))
    index["shards"][0]["name"] = f"../../{SHARD_FOLDER}/x.safetensors"
    store.write(location.join(INDEX_FILE), json.dumps(index).encode())
    with pytest.raises(LatentShardError, match="no latent shard name"):
        open_latent_set(store, location)
