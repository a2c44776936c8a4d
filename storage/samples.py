"""Samples of a data set in this process: how a stream is configured, which samples are usable, and `iter_clips`,
the Ray-free reader a single-process trainer draws its batches from (`storage.stream` is the Ray Data one)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from storage.datasets import Dataset, open_dataset
from storage.objectstore import ObjectStore, S3Config
from storage.shards import ShardEntry, ShardError, VerifiedSample, verified_samples
from storage.video import MAX_FRAMES, MAX_SIDE, decode

log = logging.getLogger(__name__)


class ReaderConfig(BaseModel):
    """How a data set is streamed."""

    model_config = ConfigDict(extra="forbid")

    splits: list[str] | None = Field(default_factory=lambda: ["train"], description="None reads every split")
    on_corrupt: Literal["skip", "fail"] = Field("skip", description="a sample failing its checksum: skip or stop")
    video_dtype: Literal["float32", "uint8"] = "float32"
    passes: int = Field(1, ge=1, description="read the shards this many times in one stream, each pass in a new "
                        "shuffled shard order; a trainer asks for enough passes that it never waits at an epoch "
                        "boundary (Ray Data restarts its pipeline there: ~2 s measured)")
    seed: int = Field(0, description="seeds the shard order of each pass after the first")
    clip_shape: tuple[int, int, int] | None = Field(None, description="(frames, height, width) every clip must have "
                                                    "(a trainer passes its model's); default: the data set card's")
    s3: S3Config = Field(default_factory=S3Config)


class CorruptSampleError(RuntimeError):
    """A sample whose bytes do not match the data set index (raised with `on_corrupt="fail"`)."""


def selected_shards(dataset: Dataset, cfg: ReaderConfig, uri: str) -> list[ShardEntry]:
    shards = dataset.shards(tuple(cfg.splits) if cfg.splits is not None else None)
    if not shards:
        raise ValueError(f"{uri} has no shards of splits {cfg.splits}; it holds {sorted(dataset.index.counts())}")
    return shards


def usable_sample(sample: VerifiedSample, clip_shape: tuple[int, ...] | None) -> tuple | ShardError:
    """(caption, clip) of a sample whose bytes matched the index, or why it cannot be trained on."""
    caption = sample.meta.get("caption")
    if not isinstance(caption, str) or not caption.strip():
        return ShardError(f"shard {sample.shard} sample {sample.key}: no caption")
    max_frames, max_side = (clip_shape[0], max(clip_shape[1:3])) if clip_shape else (MAX_FRAMES, MAX_SIDE)
    try:
        clip = decode(sample.mp4, max_frames=max_frames, max_side=max_side)
    except ValueError as e:
        return ShardError(f"shard {sample.shard} sample {sample.key}: {e}")
    if clip_shape and clip.shape[:3] != tuple(clip_shape):
        return ShardError(f"shard {sample.shard} sample {sample.key}: a {'x'.join(map(str, clip.shape[:3]))} clip "
                          f"in a data set of {'x'.join(map(str, clip_shape))} clips")
    return caption, clip


def iter_clips(uri: str, cfg: ReaderConfig | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(caption, uint8 clip) of every verified, usable sample of the data set at `uri`, in this process, pass after
    pass (each in a new seeded shard order) without end: what a single-process trainer draws its batches from.
    Corrupt samples are skipped with a warning or stop the stream (`cfg.on_corrupt`)."""
    cfg = cfg or ReaderConfig()
    store = ObjectStore(cfg.s3)
    dataset = open_dataset(store, uri)
    shards = selected_shards(dataset, cfg, uri)
    clip_shape = cfg.clip_shape or card_clip_shape(dataset.card)
    rng = np.random.default_rng(cfg.seed)
    while True:
        for number in rng.permutation(len(shards)):
            shard = shards[number]
            for result in verified_samples(store.read(dataset.shard_uri(shard)), shard):
                usable = usable_sample(result, clip_shape) if isinstance(result, VerifiedSample) else result
                if isinstance(usable, ShardError):
                    if cfg.on_corrupt == "fail":
                        raise CorruptSampleError(f"{usable}; the run stops (on_corrupt='fail')")
                    log.warning("skipped: %s", usable)
                    continue
                yield usable


def card_clip_shape(card: dict) -> tuple[int, int, int] | None:
    """(frames, height, width) every clip of the data set has, as its card says."""
    shape = card.get("clip_shape")
    return tuple(int(n) for n in shape[:3]) if shape else None
