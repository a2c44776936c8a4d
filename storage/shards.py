"""WebDataset-style tar shards and the index that vouches for them.

A data set at URI is:

    URI/shards/SPLIT-00000.tar   tar of KEY.mp4 + KEY.json (caption, ground truth, licence, source, sha256)
    URI/README.md                the dataset card (`storage.datasets`)
    URI/index.json               per-shard and per-sample sha256s, the card's sha256; written last

A shard's own sha256 is the fast check; the per-sample sha256s (of the .mp4 and of the .json) name the exact
sample that is wrong when the shard's check fails. Tars are built deterministically (sorted members, zero
mtimes and owners), so the same samples always make the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from storage.package import sha256_bytes

INDEX_FILE, CARD_FILE, SHARD_FOLDER = "index.json", "README.md", "shards"
FORMAT = "vidgen-shards-v1"
MEMBER_EXTENSIONS = ("mp4", "json")


class ShardError(ValueError):
    """A shard or sample that does not match the index: the message names the shard and the sample key."""


@dataclass
class Sample:
    """One clip as stored: its key, encoded video and metadata (caption, ground truth, licence, source, ...)."""

    key: str
    mp4: bytes
    meta: dict

    def json_bytes(self) -> bytes:
        return json.dumps({**self.meta, "sha256": sha256_bytes(self.mp4)}, sort_keys=True).encode()


@dataclass
class SampleEntry:
    key: str
    mp4_sha256: str
    json_sha256: str
    content_sha256: str  # of the raw pixels: the leakage check compares these across splits
    group: str  # the composition "red/circle/left", or an ingested clip's source: held-out groups stay out of train
    perceptual_hash: str = ""  # ingested clips (`storage.phash`): near-duplicates across splits are leaks too


@dataclass
class ShardEntry:
    name: str  # file name under shards/
    split: str
    sha256: str
    bytes: int
    samples: list[SampleEntry] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> ShardEntry:
        return cls(**{**d, "samples": [SampleEntry(**s) for s in d["samples"]]})


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}.tar"


def build_shard(samples: list[Sample], split: str, number: int) -> tuple[bytes, ShardEntry]:
    """Tar the samples (KEY.mp4 then KEY.json each) and describe the result for the index."""
    buffer = io.BytesIO()
    entries = []
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            if "/" in sample.key or "." in sample.key:
                raise ValueError(f"sample key {sample.key!r} may not contain '/' or '.'")
            meta_bytes = sample.json_bytes()
            for ext, data in (("mp4", sample.mp4), ("json", meta_bytes)):
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            entries.append(SampleEntry(sample.key, sha256_bytes(sample.mp4), sha256_bytes(meta_bytes),
                                       sample.meta.get("content_sha256", ""), sample.meta.get("group", ""),
                                       sample.meta.get("perceptual_hash", "")))
    data = buffer.getvalue()
    return data, ShardEntry(shard_name(split, number), split, sha256_bytes(data), len(data), entries)


def read_members(data: bytes, shard: str) -> dict[str, dict[str, bytes]]:
    """{key: {"mp4": bytes, "json": bytes}} from a shard's bytes; ShardError if it is not a readable tar."""
    members: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, _, ext = info.name.rpartition(".")
                members.setdefault(key, {})[ext] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ShardError(f"shard {shard} is not a readable tar ({e}): restore the shard or prepare the data set "
                         "again") from e
    return members


@dataclass
class VerifiedSample:
    key: str
    shard: str
    mp4: bytes
    meta: dict


def verified_samples(data: bytes, entry: ShardEntry) -> Iterator[VerifiedSample | ShardError]:
    """Every sample of a shard, checked against the index, in index order.

    Yields a VerifiedSample for each sample whose .mp4 and .json match their index hashes and a ShardError
    (naming shard and key) for each one that does not, so the caller decides whether to skip or to stop.
    """
    whole_shard_ok = sha256_bytes(data) == entry.sha256
    try:
        members = read_members(data, entry.name)
    except ShardError as e:
        yield e
        return
    unexpected = sorted(set(members) - {s.key for s in entry.samples})
    for key in unexpected:
        yield ShardError(f"shard {entry.name} holds sample {key!r}, which the index does not list")
    every_sample_ok = not unexpected
    for expected in entry.samples:
        files = members.get(expected.key, {})
        problem = None
        if set(files) != set(MEMBER_EXTENSIONS):
            problem = f"is missing {sorted(set(MEMBER_EXTENSIONS) - set(files)) or 'nothing'}" \
                if set(files) < set(MEMBER_EXTENSIONS) else f"has extra files {sorted(set(files))}"
        elif sha256_bytes(files["mp4"]) != expected.mp4_sha256:
            problem = "has an .mp4 whose sha256 does not match the index (changed or damaged)"
        elif sha256_bytes(files["json"]) != expected.json_sha256:
            problem = "has a .json whose sha256 does not match the index (changed or damaged)"
        if problem:
            every_sample_ok = False
            yield ShardError(f"shard {entry.name} sample {expected.key!r} {problem}")
            continue
        meta = json.loads(files["json"])
        if meta.get("sha256") != expected.mp4_sha256:
            every_sample_ok = False
            yield ShardError(f"shard {entry.name} sample {expected.key!r} has a .json whose sha256 field does not "
                             "match its .mp4")
            continue
        yield VerifiedSample(expected.key, entry.name, files["mp4"], meta)
    if not whole_shard_ok and every_sample_ok:
        # every sample matched, so the damage is in tar padding or headers: harmless to samples, still reported
        yield ShardError(f"shard {entry.name} does not match its sha256 in the index, though every sample does "
                         "(tar headers or padding changed)")


@dataclass
class Index:
    """The data set's table of contents: written last, so its presence means the data set is complete."""

    shards: list[ShardEntry]
    card_sha256: str
    format: str = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Index:
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT:
                raise ShardError(f"{where} is format {raw.get('format')!r}, not {FORMAT!r}: prepare the data set "
                                 "again with this version of vidgen")
            return cls([ShardEntry.from_dict(s) for s in raw["shards"]], raw["card_sha256"], raw["format"])
        except (ValueError, KeyError, TypeError) as e:
            if isinstance(e, ShardError):
                raise
            raise ShardError(f"{where} is not a readable data set index ({e}): prepare the data set again") from e

    @property
    def num_samples(self) -> int:
        return sum(len(s.samples) for s in self.shards)

    def counts(self) -> dict[str, int]:
        return split_counts(self.shards)


def split_counts(shards: list[ShardEntry]) -> dict[str, int]:
    """{split: samples} over the shards, in the order the splits first appear."""
    counts: dict[str, int] = {}
    for shard in shards:
        counts[shard.split] = counts.get(shard.split, 0) + len(shard.samples)
    return counts
