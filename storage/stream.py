"""Stream a data set with Ray Data: read shards, verify every sample against the index, decode in the workers.

    ds = read_dataset("s3://bucket/shapes", ReaderConfig(splits=["train"]))
    for batch in ds.iter_batches(batch_size=32):   # {"key", "shard", "caption", "video": (B, T, H, W, 3)}
        ...
    # in a Ray Train worker: ray.train.get_dataset_shard("train"), or ds.streaming_split(num_workers)

A sample whose bytes do not match the index never reaches the caller, nor does one that matches but is no
usable clip (a video that does not decode as MP4, a clip of another shape than the data set's, no caption): it is
logged with its shard and key and skipped (`on_corrupt="skip"`), or it fails the run with that message
(`on_corrupt="fail"`).
Clips decode to float32 in [-1, 1] (the model's input range), or uint8 with `video_dtype="uint8"`.

This module imports Ray (the one place in `storage/` that does): it moves bytes and nothing that knows a model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import numpy as np

from storage.datasets import open_dataset
from storage.objectstore import ObjectStore
from storage.samples import (
    CorruptSampleError,
    ReaderConfig,
    card_clip_shape,
    selected_shards,
    usable_sample,
)
from storage.shards import ShardEntry, ShardError, VerifiedSample, verified_samples

__all__ = ["CorruptSampleError", "ReaderConfig", "read_dataset"]

log = logging.getLogger(__name__)


ROWS_PER_BLOCK = 32  # small output blocks: a trainer's next batch is ready long before the whole shard is


def _columns(rows: list[tuple], video_dtype: str) -> dict[str, np.ndarray]:
    keys, shards, splits, captions, metas, clips = zip(*rows, strict=True)
    video = np.stack(clips)  # (B, T, H, W, 3) uint8
    return {"key": np.array(keys), "shard": np.array(shards), "split": np.array(splits),
            "caption": np.array(captions), "meta": np.array(metas),
            "video": video if video_dtype == "uint8" else video.astype(np.float32) / 127.5 - 1.0}


def _decode_shards(batch: dict[str, np.ndarray], entries: dict[str, ShardEntry], on_corrupt: str,
                   video_dtype: str, clip_shape: tuple[int, ...] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Shards' bytes -> their verified, usable samples, decoded, in blocks of ROWS_PER_BLOCK as they are ready."""
    rows: list[tuple] = []
    for path, data in zip(batch["path"], batch["bytes"], strict=True):
        entry = entries[str(path).rpartition("/")[2]]
        for result in verified_samples(bytes(data), entry):
            if isinstance(result, VerifiedSample):
                result = (result, *usable) if isinstance(usable := usable_sample(result, clip_shape), tuple) else usable
            if isinstance(result, ShardError):
                if on_corrupt == "fail":
                    raise CorruptSampleError(f"{result}; the run stops (on_corrupt='fail')")
                log.warning("skipped: %s", result)
                continue
            sample, caption, clip = result
            rows.append((sample.key, sample.shard, entry.split, caption, json.dumps(sample.meta), clip))
            if len(rows) == ROWS_PER_BLOCK:
                yield _columns(rows, video_dtype)
                rows = []
    if rows:
        yield _columns(rows, video_dtype)


def read_dataset(uri: str, cfg: ReaderConfig | None = None):
    """A `ray.data.Dataset` of verified, decoded samples from the data set at `uri` (local folder or s3://)."""
    import ray

    cfg = cfg or ReaderConfig()
    store = ObjectStore(cfg.s3)
    dataset = open_dataset(store, uri)
    shards = selected_shards(dataset, cfg, uri)
    fs, _ = store.filesystem(dataset.location, for_ray=True)
    paths = [store.filesystem(dataset.shard_uri(s))[1] for s in shards]
    rng = np.random.default_rng(cfg.seed)
    paths = paths + [p for _ in range(cfg.passes - 1) for p in rng.permutation(paths)]
    entries = {s.name: s for s in shards}
    return (ray.data.read_binary_files(paths, filesystem=fs, include_paths=True,
                                       override_num_blocks=len(paths))
            .map_batches(_decode_shards, batch_size=None, batch_format="numpy",
                         fn_kwargs={"entries": entries, "on_corrupt": cfg.on_corrupt, "video_dtype": cfg.video_dtype,
                                    "clip_shape": cfg.clip_shape or card_clip_shape(dataset.card)}))
