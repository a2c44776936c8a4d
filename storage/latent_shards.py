"""Precomputed latents on object storage: a clip data set encoded once by a model's VAE and text encoder, read by
every later fine-tuning run with the same key instead of encoding again.

A latent set lives in a folder named by its cache key (`CacheKey.digest`) under a cache root (local or s3://):

    ROOT/DIGEST/shards/SPLIT-FxHxW-00000-SHA.safetensors  one shape bucket of one split: arrays + sample metadata
    ROOT/DIGEST/index.json                                 each shard's sha256, bytes, samples, bucket and split,
                                                           and the key itself; written last

A shard is safetensors (never pickle): `latents` (N, ...), `text_embeds` (N, L, D) and, where the model takes one,
`text_mask` (N, L); its header metadata holds the split, the bucket's pixel shape and latent grid, and the samples'
keys and captions. Its sha256 is checked against the index before a byte of it is parsed.

The index is written last, and only if absent: a folder without one is an unfinished set and is never taken as a
cache hit; two writers of one key (whose latents are the same pure function of the same inputs) leave the first
finished index in place. Shard names end in the first 16 hex digits of their own sha256, so a writer never replaces
the bytes of a shard another writer's index vouches for (batching can change a float's last bit).
This module moves arrays and bytes; what the arrays mean is vidgen.runs.finetune_precompute's.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from storage.objectstore import AlreadyExists, Location, NotFound, ObjectStore, StorageError, parse_uri
from storage.package import sha256_bytes

INDEX_FILE, SHARD_FOLDER = "index.json", "shards"
FORMAT = "vidgen-latents-v1"
ARRAYS = ("latents", "text_embeds", "text_mask")  # text_mask only where the model takes one
_SHARD_NAME = re.compile(r"[a-z0-9_]+-\d+x\d+x\d+-\d{5}-[0-9a-f]{16}\.safetensors")
DATASET_INDEX_FILE = "index.json"  # storage.shards' index: it vouches for every shard and the card by sha256


class LatentShardError(StorageError):
    """A latent shard or index that does not match what the index vouches for: the message names it and the fix."""


@dataclass(frozen=True)
class CacheKey:
    """What a latent set is a pure function of; its digest names the set's folder, so the same key finds it again."""

    model_digest: str  # sha256 of the pipeline folder's files (its SHA256SUMS), so other weights miss the cache
    dataset_digest: str  # sha256 of the clip data set's index.json (`dataset_digest`)
    shape: tuple[int, int, int] | None  # (frames, height, width) clips were capped to before fitting; None: uncapped
    recipe: str  # the family recipe that encoded them ("Wan", "LTX-Video", "CogVideoX")
    recipe_version: int  # bumped when the encoding (normalisation, text length) of any recipe changes
    dtype: str = "float32"  # the VAE and text encoder's dtype: bf16 encoders give other numbers

    def digest(self) -> str:
        return sha256_bytes(json.dumps(self.to_dict(), sort_keys=True).encode())

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_dict(cls, raw: dict) -> CacheKey:
        shape = raw.get("shape")
        return cls(**{**raw, "shape": None if shape is None else tuple(shape)})


@dataclass
class LatentShardEntry:
    """One shard as the index vouches for it."""

    name: str  # file name under shards/
    split: str
    shape: tuple[int, int, int]  # the bucket: pixel (frames, height, width) every clip in it was fitted to
    grid: tuple[int, int, int]  # the bucket's latent (frames, height, width)
    samples: int
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "grid": list(self.grid)}

    @classmethod
    def from_dict(cls, raw: dict) -> LatentShardEntry:
        return cls(**{**raw, "shape": tuple(raw["shape"]), "grid": tuple(raw["grid"])})


@dataclass
class LatentIndex:
    """The set's table of contents and the key it was made under: written last, so its presence means complete."""

    key: CacheKey
    shards: list[LatentShardEntry] = field(default_factory=list)
    format: str = FORMAT

    def to_json(self) -> bytes:
        shards = [s.to_dict() for s in self.shards]
        return json.dumps({"format": self.format, "key": self.key.to_dict(), "shards": shards}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> LatentIndex:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise LatentShardError(f"{where} is format {raw.get('format')!r}, not {FORMAT!r}: delete the "
                                       "folder and precompute the latents again with this version of vidgen")
            shards = [LatentShardEntry.from_dict(s) for s in raw["shards"]]
            key = CacheKey.from_dict(raw["key"])
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, LatentShardError):
                raise
            raise LatentShardError(f"{where} is not a readable latent index ({e}): delete the folder and "
                                   "precompute the latents again") from e
        for shard in shards:
            if not _SHARD_NAME.fullmatch(shard.name):
                raise LatentShardError(f"{where} lists shard {shard.name!r}, which is no latent shard name "
                                       "(SPLIT-FxHxW-NNNNN-SHA.safetensors): delete the folder and precompute again")
        return cls(key, shards, raw["format"])

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    def counts(self) -> dict[str, int]:
        """{split: samples}, in the order the splits first appear."""
        counts: dict[str, int] = {}
        for shard in self.shards:
            counts[shard.split] = counts.get(shard.split, 0) + shard.samples
        return counts


@dataclass
class LatentSet:
    """An opened, complete latent set: where it is and its index."""

    location: Location
    index: LatentIndex

    def shard_uri(self, shard: LatentShardEntry) -> str:
        return self.location.join(SHARD_FOLDER, shard.name).uri

    def shards(self, splits: tuple[str, ...] | None = None) -> list[LatentShardEntry]:
        return [s for s in self.index.shards if splits is None or s.split in splits]


@dataclass
class LatentShard:
    """One shard's contents, verified: row i of every array belongs to keys[i] and captions[i]."""

    name: str
    split: str
    shape: tuple[int, int, int]
    grid: tuple[int, int, int]
    keys: list[str]
    captions: list[str]
    latents: np.ndarray
    text_embeds: np.ndarray
    text_mask: np.ndarray | None


# --- naming ---


def dataset_digest(store: ObjectStore, uri: str) -> str:
    """The digest of a clip data set (storage.datasets): the sha256 of its index, which vouches for every shard's
    and the card's sha256, so any change to the data set changes it."""
    return sha256_bytes(store.read(parse_uri(uri).join(DATASET_INDEX_FILE)))


def latent_set_location(root: str | Location, key: CacheKey) -> Location:
    return parse_uri(root).join(key.digest())


def shard_name(split: str, shape: tuple[int, int, int], number: int, sha256: str) -> str:
    frames, height, width = shape
    return f"{split}-{frames}x{height}x{width}-{number:05d}-{sha256[:16]}.safetensors"


# --- writing ---


def encode_shard(shard: LatentShard) -> bytes:
    """A shard's safetensors bytes (arrays contiguous, metadata as JSON strings, as the format requires)."""
    n = len(shard.keys)
    arrays = {"latents": shard.latents, "text_embeds": shard.text_embeds}
    if shard.text_mask is not None:
        arrays["text_mask"] = shard.text_mask
    for name, array in arrays.items():
        if array.shape[0] != n:
            raise ValueError(f"{name} has {array.shape[0]} rows for {n} keys in shard {shard.name}: one row per "
                             "sample")
    if len(shard.captions) != n:
        raise ValueError(f"shard {shard.name} has {len(shard.captions)} captions for {n} keys: one per sample")
    meta = {"split": shard.split, "shape": json.dumps(list(shard.shape)), "grid": json.dumps(list(shard.grid)),
            "keys": json.dumps(shard.keys), "captions": json.dumps(shard.captions)}
    return save_safetensors({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)


class LatentSetWriter:
    """Writes a latent set shard by shard, then its index (`finish`): until then the folder is no cache hit."""

    def __init__(self, store: ObjectStore, root: str | Location, key: CacheKey):
        self.store, self.key = store, key
        self.location = latent_set_location(root, key)
        self.store.ensure_bucket(self.location)
        self._entries: list[LatentShardEntry] = []
        self._numbers: dict[tuple[str, tuple[int, int, int]], int] = {}

    def add_shard(self, split: str, shape: tuple[int, int, int], grid: tuple[int, int, int], keys: list[str],
                  captions: list[str], latents: np.ndarray, text_embeds: np.ndarray,
                  text_mask: np.ndarray | None = None) -> LatentShardEntry:
        """Write one bucket's samples (all of one split and one shape) as the next shard of that bucket."""
        if not re.fullmatch(r"[a-z0-9_]+", split):
            raise ValueError(f"split {split!r} may hold only a-z, 0-9 and '_'")
        shape, grid = tuple(int(n) for n in shape), tuple(int(n) for n in grid)
        number = self._numbers.get((split, shape), 0)
        self._numbers[(split, shape)] = number + 1
        data = encode_shard(LatentShard(f"{split} {shape} #{number}", split, shape, grid, list(keys), list(captions),
                                        latents, text_embeds, text_mask))
        digest = sha256_bytes(data)
        name = shard_name(split, shape, number, digest)
        self.store.write(self.location.join(SHARD_FOLDER, name), data)
        entry = LatentShardEntry(name, split, shape, grid, len(keys), digest, len(data))
        self._entries.append(entry)
        return entry

    @property
    def entries(self) -> list[LatentShardEntry]:
        """The shards written so far (what `finish_latent_set` takes when several writers made one set)."""
        return list(self._entries)

    def finish(self) -> LatentSet:
        """Write the index of the shards this writer wrote and open the set (`finish_latent_set`)."""
        return finish_latent_set(self.store, self.location, self.key, self._entries)


def finish_latent_set(store: ObjectStore, location: Location, key: CacheKey,
                      entries: list[LatentShardEntry]) -> LatentSet:
    """Write the index of a latent set whose shards are written (by one writer, or by several in parallel: the
    shard names carry their sha256, so writers never collide), only if none is there yet, and open the set; an
    index another run of the same key finished first is kept, and that set is returned."""
    if not entries:
        raise ValueError(f"no samples were written to {location.uri}: precompute needs at least one clip")
    index = LatentIndex(key, sorted(entries, key=lambda s: s.name))
    try:
        store.write(location.join(INDEX_FILE), index.to_json(), if_absent=True)
    except AlreadyExists:
        pass
    return open_latent_set(store, location)


# --- reading ---


def open_latent_set(store: ObjectStore, uri: str | Location) -> LatentSet:
    """The complete latent set at `uri`; NotFound (saying whether an unfinished one is there) or LatentShardError."""
    loc = parse_uri(uri)
    try:
        raw = store.read(loc.join(INDEX_FILE))
    except NotFound:
        unfinished = store.bucket_exists(loc) and store.list(loc.join(SHARD_FOLDER))
        what = "an unfinished latent set (shards but no index: the run writing it stopped)" if unfinished else \
            "no latent set"
        raise NotFound(f"{loc.uri} holds {what}: precompute the latents again") from None
    index = LatentIndex.from_json(raw, loc.join(INDEX_FILE).uri)
    if loc.name != index.key.digest():
        raise LatentShardError(f"{loc.join(INDEX_FILE).uri} was made under another cache key (digest "
                               f"{index.key.digest()[:12]}…, folder {loc.name[:12]}…): delete the folder and "
                               "precompute again")
    return LatentSet(loc, index)


def find_latent_set(store: ObjectStore, root: str | Location, key: CacheKey) -> LatentSet | None:
    """The complete latent set made under `key` in the cache at `root`, or None (none, or an unfinished one)."""
    try:
        return open_latent_set(store, latent_set_location(root, key))
    except NotFound:
        return None


def read_shard(store: ObjectStore, latent_set: LatentSet, entry: LatentShardEntry) -> LatentShard:
    """A shard's arrays and metadata, its sha256 checked against the index before its bytes are parsed."""
    uri = latent_set.shard_uri(entry)
    try:
        data = store.read(uri)
    except NotFound:
        raise LatentShardError(f"latent shard {entry.name} is listed in the index but missing from "
                               f"{latent_set.location.uri}: delete the folder and precompute again") from None
    if sha256_bytes(data) != entry.sha256:
        raise LatentShardError(f"latent shard {entry.name} does not match its sha256 in {INDEX_FILE} (changed or "
                               f"damaged): delete {latent_set.location.uri} and precompute again")
    return _parse_shard(data, entry)


def _parse_shard(data: bytes, entry: LatentShardEntry) -> LatentShard:
    try:
        arrays = load_safetensors(data)
        meta = _safetensors_metadata(data)
        keys, captions = json.loads(meta["keys"]), json.loads(meta["captions"])
        shard = LatentShard(entry.name, meta["split"], tuple(json.loads(meta["shape"])),
                            tuple(json.loads(meta["grid"])), keys, captions, arrays["latents"],
                            arrays["text_embeds"], arrays.get("text_mask"))
    except (SafetensorError, ValueError, KeyError, TypeError) as e:
        raise LatentShardError(f"latent shard {entry.name} matches its sha256 but is no readable latent shard "
                               f"({e}): precompute again") from e
    found = (shard.split, shard.shape, shard.grid, len(keys))
    if found != (entry.split, entry.shape, entry.grid, entry.samples):
        raise LatentShardError(f"latent shard {entry.name} holds (split, shape, grid, samples) {found}, the index "
                               f"says {(entry.split, entry.shape, entry.grid, entry.samples)}: precompute again")
    return shard


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors header (the 8-byte little-endian length, then JSON)."""
    length = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + length]).get("__metadata__", {})
