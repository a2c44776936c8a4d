"""A data set at a URI: its card and index, how it is finished (index last), verified, and checked for leakage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from storage.cards import CardError, parse_card, render_card
from storage.objectstore import Location, NotFound, ObjectStore, StorageError, parse_uri
from storage.package import sha256_bytes
from storage.phash import BITS, NEAR_BITS, hamming, hash_array
from storage.shards import (
    CARD_FILE,
    INDEX_FILE,
    SHARD_FOLDER,
    Index,
    ShardEntry,
    ShardError,
    split_counts,
    verified_samples,
)

log = logging.getLogger(__name__)
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"


@dataclass
class Dataset:
    """An opened data set: where it is, its index and its card's YAML header."""

    location: Location
    index: Index
    card: dict

    def shard_uri(self, shard: ShardEntry) -> str:
        return self.location.join(SHARD_FOLDER, shard.name).uri

    def shards(self, splits: tuple[str, ...] | None = None) -> list[ShardEntry]:
        return [s for s in self.index.shards if splits is None or s.split in splits]


def dataset_card(meta: dict, body: str, shards: list[ShardEntry]) -> str:
    """The card with counts filled in from the shards themselves, so they cannot disagree with the index."""
    counts = split_counts(shards)
    return render_card({**meta, "num_samples": sum(counts.values()), "num_shards": len(shards),
                        "splits": counts}, body)


def finish_dataset(store: ObjectStore, uri: str, shards: list[ShardEntry], card_meta: dict, card_body: str) -> Index:
    """Write the card, then the index: the data set becomes visible only once both are complete."""
    loc = parse_uri(uri)
    card = dataset_card(card_meta, card_body, shards).encode()
    store.write(loc.join(CARD_FILE), card)
    index = Index(sorted(shards, key=lambda s: s.name), sha256_bytes(card))
    store.write(loc.join(INDEX_FILE), index.to_json())
    return index


def open_dataset(store: ObjectStore, uri: str) -> Dataset:
    """Read and check the index and card of the data set at `uri`; StorageError saying what is wrong and the fix."""
    loc = parse_uri(uri)
    try:
        raw_index = store.read(loc.join(INDEX_FILE))
    except NotFound:
        if store.bucket_exists(loc):
            shards = [o for o in store.list(loc.join(SHARD_FOLDER)) if o.uri.endswith(".tar")]
            if shards:
                raise StorageError(f"{loc.uri} has {len(shards)} shards but no {INDEX_FILE}: the data set was not "
                                   "finished (the index is written last); prepare it again with "
                                   f"`vidgen data prepare --out {loc.uri}`") from None
        raise NotFound(f"no data set at {loc.uri} (no {INDEX_FILE}): make one with "
                       f"`vidgen data prepare --n 2000 --out {loc.uri}`") from None
    try:
        index = Index.from_json(raw_index, loc.join(INDEX_FILE).uri)
    except ShardError as e:
        raise StorageError(str(e)) from e
    if index.num_samples == 0:
        raise StorageError(f"the data set at {loc.uri} is empty (its index lists 0 samples): prepare it with --n > 0")
    card_bytes = store.read(loc.join(CARD_FILE))
    if sha256_bytes(card_bytes) != index.card_sha256:
        raise StorageError(f"{loc.join(CARD_FILE).uri} does not match the sha256 in {INDEX_FILE}: the card was "
                           "changed after the data set was made; restore it or prepare the data set again")
    try:
        card, _ = parse_card(card_bytes.decode(), loc.join(CARD_FILE).uri)
    except (CardError, UnicodeDecodeError) as e:
        raise StorageError(str(e)) from e
    return Dataset(loc, index, card)


# --- verification ---


def card_problems(dataset: Dataset) -> list[str]:
    """Disagreements between the card's header and the index."""
    problems = []
    for field in ("license", "generator_version", "splits", "num_samples"):
        if field not in dataset.card:
            problems.append(f"the dataset card has no {field!r} field")
    if dataset.card.get("splits") not in (None, dataset.index.counts()):
        problems.append(f"the dataset card says splits {dataset.card['splits']} but the index holds "
                        f"{dataset.index.counts()}")
    if dataset.card.get("num_samples") not in (None, dataset.index.num_samples):
        problems.append(f"the dataset card says {dataset.card['num_samples']} samples but the index lists "
                        f"{dataset.index.num_samples}")
    return problems


def leakage_problems(index: Index, heldout_groups: list[str]) -> list[str]:
    """Train must share no content hash with any other split, no clip of another split may be a near-duplicate
    of a train clip (by perceptual hash, where the index has them), and no held-out group may appear in train."""
    problems = _near_duplicate_leaks(index)
    train = {s.content_sha256: s.key for shard in index.shards if shard.split == TRAIN_SPLIT for s in shard.samples}
    heldout = set(heldout_groups)
    seen_keys: dict[str, str] = {}
    for shard in index.shards:
        for s in shard.samples:
            if s.key in seen_keys:
                problems.append(f"sample key {s.key!r} appears in both {seen_keys[s.key]} and {shard.name}")
            seen_keys[s.key] = shard.name
            if not s.content_sha256:
                problems.append(f"shard {shard.name} sample {s.key!r} has no content hash: leakage cannot be checked")
            elif shard.split != TRAIN_SPLIT and s.content_sha256 in train:
                problems.append(f"leak: {shard.split} sample {s.key!r} ({shard.name}) has the same content as "
                                f"train sample {train[s.content_sha256]!r}")
            if shard.split == TRAIN_SPLIT and s.group in heldout:
                problems.append(f"leak: train sample {s.key!r} ({shard.name}) shows held-out composition {s.group}")
    return problems


def _near_duplicate_leaks(index: Index) -> list[str]:
    train = [(s.key, s.perceptual_hash) for shard in index.shards if shard.split == TRAIN_SPLIT
             for s in shard.samples if s.perceptual_hash]
    if not train:
        return []
    hashes = hash_array([h for _, h in train])
    problems = []
    for shard in index.shards:
        if shard.split == TRAIN_SPLIT:
            continue
        for s in shard.samples:
            if not s.perceptual_hash:
                continue
            distances = hamming(s.perceptual_hash, hashes)
            closest = int(distances.argmin())
            if distances[closest] <= NEAR_BITS:
                problems.append(f"leak: {shard.split} sample {s.key!r} ({shard.name}) is a near-duplicate of train "
                                f"sample {train[closest][0]!r} ({int(distances[closest])} of {BITS} bits differ)")
    return problems


def _shard_problems(store: ObjectStore, dataset: Dataset, shard: ShardEntry) -> list[str]:
    try:
        data = store.read(dataset.shard_uri(shard))
    except NotFound:
        return [f"shard {shard.name} is listed in the index but missing from {dataset.location.uri}"]
    problems = [str(r) for r in verified_samples(data, shard) if isinstance(r, ShardError)]
    if len(data) != shard.bytes and not problems:
        problems.append(f"shard {shard.name} is {len(data)} bytes, the index says {shard.bytes}")
    return problems


def empty_splits(index: Index) -> list[str]:
    """The splits every data set is made of (train and eval) that hold no sample: a leakage check passes vacuously
    for an empty split, so `vidgen data verify` says so rather than report it clean."""
    counts = index.counts()
    return [split for split in (TRAIN_SPLIT, EVAL_SPLIT) if not counts.get(split)]


def verify_dataset(store: ObjectStore, dataset: str | Dataset,
                   on_shard: Callable[[ShardEntry, list[str]], None] | None = None, threads: int = 8) -> list[str]:
    """Re-check every shard and sample checksum, the card, and leakage; return every problem found (empty: good).

    `dataset` is a URI or an already opened Dataset. Raises StorageError only when the data set cannot be
    opened at all (no index, unreadable card).
    """
    dataset = open_dataset(store, dataset) if isinstance(dataset, str) else dataset
    problems = card_problems(dataset)
    listed = {s.name for s in dataset.index.shards}
    problems += [f"shard {o.uri} is not listed in the index" for o in store.list(dataset.location.join(SHARD_FOLDER))
                 if o.uri.rpartition("/")[2] not in listed]
    problems += leakage_problems(dataset.index, list(dataset.card.get("heldout_groups", [])))
    with ThreadPoolExecutor(threads) as pool:
        futures = [(shard, pool.submit(_shard_problems, store, dataset, shard)) for shard in dataset.index.shards]
        for shard, future in futures:
            found = future.result()
            problems += found
            if on_shard:
                on_shard(shard, found)
    return problems
