"""Precompute once, train many times: encode a clip data set with a pipeline's VAE and text encoder into a latent
set (storage.latent_shards) cached under its key, and read it back as training batches of one shape bucket each.

    key = cache_key(pipe, model_digest, dataset_digest(store, data_uri))
    latent_set = precompute_latents(pipe, clips, store, cache_root, key)   # a second call finds it: no VAE call
    for batch in latent_batches(store, latent_set, batch_size=4, seed=0):
        loss = training_loss(objective, transformer, batch.latents, batch.text, generator)

Each clip is first brought to the nearest shape the model makes (`fit_clip`: frames cropped from the start to the
model's rule, e.g. 12 -> 9 for 4k+1; height and width resized down to its multiples), so a clip is never refused for
its shape. Clips of one split and one fitted shape form a bucket; a shard holds one bucket, and a batch comes from one
shard, so every batch stacks. The training workers read only the latent set: they never load the VAE or text encoder.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from storage.latent_shards import CacheKey, LatentSet, LatentSetWriter, find_latent_set, read_shard
from storage.objectstore import Location, ObjectStore
from vidgen.runs.finetune_recipes import Latents, TextEmbeddings, encode_clips, encode_text, recipe_for, shape_rule

log = logging.getLogger(__name__)

# bump when encode_clips, encode_text or a recipe's normalise / encode_prompt changes what a clip encodes to
PRECOMPUTE_VERSION = 1
# rows of one bucket per shard, the unit a training reader verifies and holds at once: Wan 1.3B at 81x480x832 is
# ~8.4 MB of float32 latents + ~8.4 MB of UMT5 embeddings (512 x 4096) a clip, so ~270 MB a shard
SAMPLES_PER_SHARD = 16


@dataclass(frozen=True)
class Clip:
    """One decoded clip as the data set reader yields it."""

    key: str
    caption: str
    split: str
    frames: np.ndarray  # uint8 (T, H, W, 3)


@dataclass(frozen=True)
class LatentBatch:
    """Training input of one shape bucket, as torch tensors `training_loss` takes."""

    latents: Latents
    text: TextEmbeddings
    keys: list[str]
    captions: list[str]
    shape: tuple[int, int, int]  # the bucket's pixel (frames, height, width)


def cache_key(pipe, model_digest: str, dataset_digest: str,
              max_shape: tuple[int, int, int] | None = None) -> CacheKey:
    """The key of the latent set `pipe` makes from a data set: what its latents are a pure function of."""
    family = recipe_for(type(pipe).__name__).family
    dtype = str(pipe.vae.dtype).removeprefix("torch.")
    return CacheKey(model_digest, dataset_digest, max_shape, family, PRECOMPUTE_VERSION, dtype)


def clips_from_columns(batches: Iterable[dict[str, np.ndarray]]) -> Iterator[Clip]:
    """Clips from the column batches storage.stream yields (`video_dtype="uint8"`): key, caption, split, video."""
    for batch in batches:
        for key, caption, split, video in zip(batch["key"], batch["caption"], batch["split"], batch["video"],
                                              strict=True):
            if video.dtype != np.uint8:
                raise ValueError(f"clip {key} is {video.dtype}: read the data set with video_dtype='uint8'")
            yield Clip(str(key), str(caption), str(split), video)


def fitted_shape(pipe, clip_shape: tuple[int, int, int],
                 max_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """The shape the model makes nearest to a clip's (capped at max_shape first): never above the clip's own."""
    if max_shape is not None:
        clip_shape = tuple(min(n, cap) for n, cap in zip(clip_shape, max_shape, strict=True))
    return shape_rule(pipe).fitted(*clip_shape)


def fit_clip(frames: np.ndarray, shape: tuple[int, int, int], name: str = "the clip") -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 shape + (3,): the first `shape[0]` frames, resized (antialiased) to the size."""
    count, height, width = shape
    if frames.shape[0] < count:
        raise ValueError(f"{name} has {frames.shape[0]} frames, fewer than the {count} the model makes at least: "
                         "drop it from the data set")
    frames = frames[:count]
    if frames.shape[1:3] == (height, width):
        return np.ascontiguousarray(frames)
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # (T, 3, H, W)
    resized = F.interpolate(pixels, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (T, h, w, 3)


def precompute_latents(pipe, clips: Iterable[Clip], store: ObjectStore, root: str | Location, key: CacheKey,
                       batch_size: int = 4, samples_per_shard: int = SAMPLES_PER_SHARD) -> LatentSet:
    """The latent set of `clips` under `key` in the cache at `root`: found if a run made it before (nothing is
    encoded), else made: each clip fitted, grouped by (split, shape), encoded in batches and written a shard a
    bucket at a time."""
    found = find_latent_set(store, root, key)
    if found is not None:
        log.info("reusing the precomputed latents at %s (%d samples)", found.location.uri, found.index.num_samples)
        return found
    writer = LatentSetWriter(store, root, key)
    write_buckets(pipe, clips, writer, batch_size, samples_per_shard)
    latent_set = writer.finish()
    log.info("precomputed %d samples into %s: %s", latent_set.index.num_samples, latent_set.location.uri,
             latent_set.index.counts())
    return latent_set


def write_buckets(pipe, clips: Iterable[Clip], writer: LatentSetWriter, batch_size: int = 4,
                  samples_per_shard: int = SAMPLES_PER_SHARD) -> None:
    """Fit each clip, group the clips by (split, shape), encode them in batches and write a shard each time a bucket
    fills, then the partly filled buckets. The index is the caller's to write (`writer.finish`, or one index for
    the shards of several writers: `storage.latent_shards.finish_latent_set`)."""
    buckets: dict[tuple[str, tuple[int, int, int]], list[Clip]] = {}
    for clip in clips:
        shape = fitted_shape(pipe, clip.frames.shape[:3], writer.key.shape)
        bucket = buckets.setdefault((clip.split, shape), [])
        bucket.append(Clip(clip.key, clip.caption, clip.split, fit_clip(clip.frames, shape, f"clip {clip.key}")))
        if len(bucket) == samples_per_shard:
            _write_bucket(pipe, writer, clip.split, shape, buckets.pop((clip.split, shape)), batch_size)
    for (split, shape), bucket in sorted(buckets.items()):
        _write_bucket(pipe, writer, split, shape, bucket, batch_size)


def _write_bucket(pipe, writer: LatentSetWriter, split: str, shape: tuple[int, int, int], clips: list[Clip],
                  batch_size: int) -> None:
    latents, embeds, masks, grid = [], [], [], None
    with torch.no_grad():
        for start in range(0, len(clips), batch_size):
            batch = clips[start:start + batch_size]
            encoded = encode_clips(pipe, torch.from_numpy(np.stack([c.frames for c in batch])))
            text = encode_text(pipe, [c.caption for c in batch])
            latents.append(encoded.values.float().cpu().numpy())
            embeds.append(text.embeds.float().cpu().numpy())
            if text.mask is not None:
                masks.append(text.mask.cpu().numpy())
            grid = encoded.grid
    writer.add_shard(split, shape, grid, [c.key for c in clips], [c.caption for c in clips],
                     np.concatenate(latents), np.concatenate(embeds), np.concatenate(masks) if masks else None)


def latent_batches(store: ObjectStore, latent_set: LatentSet, batch_size: int, splits: tuple[str, ...] = ("train",),
                   seed: int | None = None, part: tuple[int, int] | None = None) -> Iterator[LatentBatch]:
    """Training batches of one bucket each, every shard verified before it is read. With a seed, shards and the
    rows within each are shuffled (the same seed, the same order); a shard's last batch may be smaller. `part`
    (i, n): only every n-th shard of that order from the i-th (a data-parallel rank's share)."""
    shards = latent_set.shards(splits)
    rng = np.random.default_rng(seed) if seed is not None else None
    order = list(rng.permutation(len(shards)) if rng is not None else range(len(shards)))
    if part is not None:
        order = order[part[0]::part[1]]
    for i in order:
        shard = read_shard(store, latent_set, shards[i])
        rows = rng.permutation(len(shard.keys)) if rng is not None else np.arange(len(shard.keys))
        for start in range(0, len(rows), batch_size):
            take = rows[start:start + batch_size]
            mask = None if shard.text_mask is None else torch.from_numpy(shard.text_mask[take])
            yield LatentBatch(Latents(torch.from_numpy(shard.latents[take]), shard.grid),
                              TextEmbeddings(torch.from_numpy(shard.text_embeds[take]), mask),
                              [shard.keys[j] for j in take], [shard.captions[j] for j in take], shard.shape)
