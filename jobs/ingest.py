"""Ingest: a folder or bucket of real video files plus a captions file -> a governed, checksummed data set.

Every file under SRC is a candidate; the captions file (`storage.captions`: path, caption, licence, source) says
what each shows. In parallel (Ray Data, one task a file), each video is resampled to `fps`, resized and
centre-cropped to HxW, cut into windows of `frames` frames every `stride`, and each window is encoded as the
shards' MP4 with a content sha256 and a perceptual hash (`storage.phash`). The driver governs each file's clips as
they arrive (in path order, so a run is deterministic), and writes a shard as soon as it is full: it never holds
more than one shard's clips per split (and the shards being written).

Limits bound what one file may cost, not only what it is: a file over `max_bytes` (by the listing's size, and the
opened object's size again in the task) is refused before a byte is read, and reads are streamed into the decoder
and counted; `max_frames` bounds the source frames decoded, and `max_file_seconds` the wall clock of one file (a
deadline checked on every read and every decoded frame, so the Ray Data task ends with that file's error row and
frees its CPU; Ray Data's map has no per-task timeout, this deadline is it).

The driver governs:

    refused      a file that is not a readable video within the limits, shorter than one window, without a
                 caption row, or with a licence off `allow_licences`; a caption row naming no file: one line of
                 OUT/errors.jsonl each ({"path", "reason"}), and the run goes on
    duplicates   exact (same pixels) and near (perceptual hash within `storage.phash.NEAR_BITS`) duplicates are
                 dropped, the first kept (files in path order); counted in the card
    split        by source: a source's clips all go to train or all to eval (a seeded hash of the source; with
                 two or more sources at least one is eval unless --eval-fraction is 0), so no
                 source is in both; the card lists the eval sources as held-out groups, and `vidgen data verify`
                 proves the split by source, content hash and perceptual hash

The card (counts per licence, source and split, codecs and resolutions seen, what was dropped and why, the
command) and then the index are written last: a data set is visible only when complete. An OUT that already holds
a data set is refused (ingest into a new OUT: a run is cheap to repeat, and a half-finished one is invisible).

Run it:
    vidgen data ingest videos/ --captions videos/captions.csv --out data/mine     # starts a local Ray
    python -m jobs.ingest --config ingest.yaml [--address auto]
    ray job submit --working-dir . -- python -m jobs.ingest --config ingest.yaml --address auto
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs._entrypoint import job_arguments
from jobs.connection import connect_ray
from storage import video
from storage.captions import CaptionRow, captions_format, parse_captions
from storage.datasets import finish_dataset
from storage.footage import Footage, FootageError, FootageLimits, read_footage, size_problem, windows
from storage.objectstore import Location, ObjectStore, S3Config, StorageError, parse_uri
from storage.phash import NEAR_BITS, clip_phash, hamming, hash_array
from storage.shards import INDEX_FILE, SHARD_FOLDER, Sample, ShardEntry, build_shard

log = logging.getLogger(__name__)
ERRORS = "errors.jsonl"
INGEST_VERSION = "vidgen-ingest-v1"


class IngestConfig(BaseModel):
    """What to ingest, how to cut it, and what to let in."""

    model_config = ConfigDict(extra="forbid")

    src: str = Field(description="folder, file:///… or s3://BUCKET/PREFIX holding the videos (every file is a "
                                 "candidate)")
    captions: str = Field(description="CSV or JSONL: path (relative to src), caption|text, licence|license, "
                                      "source (optional)")
    out: str = Field(description="data set URI: a new folder, file:///… or s3://BUCKET/PREFIX")
    frames: int = Field(8, ge=2, le=256, description="frames a clip")
    height: int = Field(32, ge=16, le=1024, description="even: H.264 with yuv420p")
    width: int = Field(32, ge=16, le=1024, description="even: H.264 with yuv420p")
    fps: float = Field(8, gt=0, le=120, description="videos are resampled to this frame rate")
    stride: int | None = Field(None, ge=1, description="frames between window starts (default: frames, no overlap)")
    allow_licences: list[str] = Field(default_factory=list, description="licences let in (case-insensitive); "
                                                                        "empty: any")
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="share of sources whose clips form the eval split; with "
                                 "two or more sources at least one (0: no eval split)")
    seed: int = Field(0, description="seeds the split of sources")
    samples_per_shard: int = Field(256, ge=1)
    crf: int = Field(12, ge=0, le=51, description="H.264 quality of the stored clips")
    max_bytes: int = Field(FootageLimits.max_bytes, ge=1, description="a larger file is refused unread")
    max_pixels: int = Field(FootageLimits.max_pixels, ge=1, description="frames over width x height are refused "
                                                                        "before decoding (decompression bombs)")
    max_seconds: float = Field(FootageLimits.max_seconds, gt=0, description="a longer video is refused")
    max_frames: int = Field(FootageLimits.max_frames, ge=1, description="a video with more source frames is refused "
                            "(by its header, else when decoding reaches it): decoding costs by the frame, so a "
                            "1000 fps stream within max_seconds is refused here")
    max_file_seconds: float = Field(FootageLimits.max_file_seconds, gt=0, description="wall-clock seconds one file "
                                    "may take to read and decode; a slower file is an error row and its task is "
                                    "freed")
    command: str = Field("", description="how the run was started, for the card (set by the CLI)")
    s3: S3Config = Field(default_factory=S3Config)

    @model_validator(mode="after")
    def _even(self):
        if problem := video.h264_size_problem(self.height, self.width):
            raise ValueError(problem)
        return self

    def limits(self) -> FootageLimits:
        return FootageLimits(self.max_bytes, self.max_pixels, self.max_seconds, self.max_frames, self.max_file_seconds)


def _read_file(store: ObjectStore, uri: str, cfg: IngestConfig) -> Footage:
    """Open the object (its size is known from the open: a HEAD on S3, a stat locally) and stream it into the
    decoder, which refuses it by size before reading a byte."""
    fs, path = store.filesystem(uri)
    try:
        with fs.open_input_file(path) as file:
            return read_footage(file, cfg.fps, cfg.height, cfg.width, cfg.limits(), threads=1)
    except OSError as e:  # pyarrow's I/O errors (missing object, S3 refusing) are OSErrors
        raise StorageError(f"cannot read {uri} ({e})") from None


def _ingest_file(row: dict, config: dict) -> dict:
    """In a Ray task (one CPU, so one decoder thread): one video file -> its clips (MP4 bytes and facts), or the
    reason it was refused."""
    cfg = IngestConfig.model_validate(config)
    facts = {"path": row["path"], "error": None, "mp4": [], "clips": "[]", "video": "{}"}
    try:
        footage = _read_file(ObjectStore(cfg.s3), row["uri"], cfg)
        cut = windows(footage.frames, cfg.frames, cfg.stride or cfg.frames)
        if not cut:
            raise FootageError(f"shorter than one window: {len(footage.frames)} frames at {cfg.fps:g} fps "
                               f"({footage.seconds:.2f} s), a clip needs {cfg.frames}")
    except (FootageError, StorageError) as e:
        return {**facts, "error": str(e)}
    clips = [{"start_s": round(start / cfg.fps, 4), "end_s": round((start + cfg.frames) / cfg.fps, 4),
              "content_sha256": hashlib.sha256(clip.tobytes()).hexdigest(), "perceptual_hash": clip_phash(clip)}
             for start, clip in cut]
    return {**facts, "mp4": [video.encode(clip, "mp4", fps=round(cfg.fps), crf=cfg.crf) for _, clip in cut],
            "clips": json.dumps(clips),
            "video": json.dumps({"codec": footage.codec, "container": footage.container,
                                 "resolution": f"{footage.width}x{footage.height}",
                                 "fps": round(footage.source_fps, 3), "seconds": round(footage.seconds, 3)})}


def _source_draw(source: str, seed: int) -> float:
    """A source's seeded draw in [0, 1): the same for a source whichever other sources a run holds."""
    return int(hashlib.sha256(f"{seed}\n{source}".encode()).hexdigest()[:12], 16) / 16**12


def is_eval_source(source: str, fraction: float, seed: int) -> bool:
    """Whether a source's own draw puts it in the eval split (below `fraction`)."""
    return _source_draw(source, seed) < fraction


def eval_sources(sources: set[str], fraction: float, seed: int) -> set[str]:
    """The sources whose clips form the eval split: those `is_eval_source` picks, and with two or more sources and a
    fraction above 0 never none (a small fraction of a few sources, 0.1 of 3, often draws none): then the source
    with the lowest draw. Decided from the caption rows before any clip arrives, so shards stream as they fill."""
    chosen = {s for s in sources if is_eval_source(s, fraction, seed)}
    if not chosen and fraction > 0 and len(sources) >= 2:
        chosen = {min(sources, key=lambda s: _source_draw(s, seed))}
    return chosen


class _Dedupe:
    """Drops exact and near duplicates of a clip kept earlier (in the order clips are offered), counting them."""

    def __init__(self):
        self.seen: set[str] = set()
        self.hashes: np.ndarray | None = None  # the first `kept` rows are the kept clips' perceptual hashes
        self.kept = 0
        self.dropped: Counter = Counter()

    def keep(self, clip: dict) -> bool:
        if clip["content_sha256"] in self.seen:
            self.dropped["exact duplicate"] += 1
            return False
        if self.kept and hamming(clip["perceptual_hash"], self.hashes[:self.kept]).min() <= NEAR_BITS:
            self.dropped["near duplicate"] += 1
            return False
        row = hash_array([clip["perceptual_hash"]])
        if self.hashes is None:
            self.hashes = np.empty((64, row.shape[1]), np.uint8)
        elif self.kept == len(self.hashes):  # grow by doubling: keeping a clip stays amortised O(1)
            self.hashes = np.concatenate([self.hashes, np.empty_like(self.hashes)])
        self.hashes[self.kept] = row[0]
        self.kept += 1
        self.seen.add(clip["content_sha256"])
        return True


class _ShardWriter:
    """Writes a split's shard as soon as it holds `samples_per_shard` clips, in background threads with at most
    `PENDING` shards in flight: the driver holds one open shard a split and the shards being written, never the
    whole data set."""

    PENDING = 4

    def __init__(self, store: ObjectStore, out: Location, samples_per_shard: int):
        self.store, self.out, self.per_shard = store, out, samples_per_shard
        self.open: dict[str, list[Sample]] = {"train": [], "eval": []}
        self.samples: Counter = Counter()
        self.shards: Counter = Counter()
        self.pool = ThreadPoolExecutor(self.PENDING)
        self.writing: list[Future] = []
        self.entries: list[ShardEntry] = []

    def add(self, split: str, mp4: bytes, meta: dict) -> None:
        self.open[split].append(Sample(f"{split}-{self.samples[split]:07d}", mp4, meta))
        self.samples[split] += 1
        if len(self.open[split]) == self.per_shard:
            self._write(split)

    def finish(self) -> list[ShardEntry]:
        """Write the partly filled shards and wait for every write; every shard's index entry."""
        for split, samples in self.open.items():
            if samples:
                self._write(split)
        self.pool.shutdown()
        self.entries += [f.result() for f in self.writing]
        return self.entries

    def _write(self, split: str) -> None:
        samples, self.open[split] = self.open[split], []
        self.writing.append(self.pool.submit(self._put, samples, split, self.shards[split]))
        self.shards[split] += 1
        while len(self.writing) > self.PENDING:
            self.entries.append(self.writing.pop(0).result())

    def _put(self, samples: list[Sample], split: str, number: int) -> ShardEntry:
        data, entry = build_shard(samples, split, number)
        self.store.write(self.out.join(SHARD_FOLDER, entry.name), data)
        return entry


@dataclass
class Governed:
    """What the driver kept of the files' results: clip facts (no video bytes), videos, drops, shard entries."""

    clips: list[dict]
    videos: list[dict]
    dropped: Counter
    entries: list[ShardEntry]


def govern(results: Iterable[dict], rows: dict[str, CaptionRow], cfg: IngestConfig, store: ObjectStore,
           refused: list[dict], evals: set[str] | None = None) -> Governed:
    """Dedupe, split and shard each file's clips as its result arrives (`results` in path order: the first file's
    clip is the one kept); a refused file is appended to `refused`. Shards are written as they fill. `evals`: the
    eval sources (default: `eval_sources` of every caption row's source)."""
    if evals is None:
        evals = eval_sources({row.source for row in rows.values()}, cfg.eval_fraction, cfg.seed)
    dedupe, shards = _Dedupe(), _ShardWriter(store, parse_uri(cfg.out), cfg.samples_per_shard)
    clips, videos = [], []
    for result in results:
        if result["error"]:
            refused.append({"path": result["path"], "reason": result["error"]})
            continue
        row = rows[result["path"]]
        videos.append({"path": row.path, **json.loads(result["video"])})
        for facts, mp4 in zip(json.loads(result["clips"]), result["mp4"], strict=True):
            clip = {"caption": row.caption, "license": row.licence, "source": row.source, "group": row.source,
                    "path": row.path, **facts}
            if dedupe.keep(clip):
                clip["split"] = "eval" if row.source in evals else "train"
                shards.add(clip["split"], mp4, clip)
                clips.append(clip)
    return Governed(clips, videos, dedupe.dropped, shards.finish())


def card(cfg: IngestConfig, clips: list[dict], videos: list[dict], dropped: Counter, refused: list[dict],
         evals: set[str]) -> tuple[dict, str]:
    licences = sorted({c["license"] for c in clips})
    refusal_kinds = Counter(r["reason"].split(":")[0].split(" (")[0] for r in refused)
    meta = {
        "pretty_name": f"ingested from {cfg.src}",
        "license": licences[0] if len(licences) == 1 else "other",
        "task_categories": ["text-to-video"],
        "generator_version": INGEST_VERSION,
        "provenance": f"real video files from {cfg.src}, captions from {cfg.captions}",
        "clip_shape": [cfg.frames, cfg.height, cfg.width, 3],
        "fps": cfg.fps,
        "stride": cfg.stride or cfg.frames,
        "codec": f"H.264 (libx264, yuv420p, crf {cfg.crf}) in MP4",
        "split_by": "source",
        "heldout_groups": sorted(evals),  # eval sources: `vidgen data verify` proves none is in train
        "licences": dict(Counter(c["license"] for c in clips)),
        "sources": {split: len({c["source"] for c in clips if c["split"] == split}) for split in ("train", "eval")},
        "clips_per_source": dict(Counter(c["source"] for c in clips)),
        "codecs_seen": dict(Counter(f"{v['codec']} in {v['container']}" for v in videos)),
        "resolutions_seen": dict(Counter(v["resolution"] for v in videos)),
        "dropped": dict(dropped),
        "refused_files": len(refused),
        "refusals": dict(refusal_kinds),
        "allowed_licences": cfg.allow_licences or "any",
        "command": cfg.command or "jobs.ingest.ingest()",
    }
    body = f"""# Ingested video clips

{len(clips)} clips of {cfg.frames}x{cfg.height}x{cfg.width} at {cfg.fps:g} fps, cut from {len(videos)} videos
under `{cfg.src}` (captions: `{cfg.captions}`), each keeping its video's caption, licence, source and time span.

## Governance
- Split by source: {meta['sources']['train']} sources in train, {meta['sources']['eval']} in eval; no source is
  in both (`heldout_groups` lists the eval sources; `vidgen data verify` checks them, and that no eval clip
  shares a content hash or is a perceptual near-duplicate of a train clip).
- Dropped as duplicates of an earlier clip: {dropped.get('exact duplicate', 0)} exact,
  {dropped.get('near duplicate', 0)} near (perceptual hash within {NEAR_BITS} bits).
- Refused: {len(refused)} files or caption rows, each named with its reason in `errors.jsonl` beside this card.
- Licences: {', '.join(f'{k} ({v} clips)' for k, v in meta['licences'].items()) or 'none'}; allowed:
  {', '.join(cfg.allow_licences) or 'any'}. Check each source's terms before publishing a model trained on it.

## How it was made
```
{meta['command']}
```
"""
    return meta, body


def ingest(cfg: IngestConfig, address: str | None = None,
           on_file: Callable[[dict, int], None] | None = None) -> dict:
    """Ingest the videos of `cfg.src`; returns a summary. `on_file(result, total)` reports each file done."""
    store = ObjectStore(cfg.s3)
    out, src = parse_uri(cfg.out), parse_uri(cfg.src)
    store.ensure_bucket(out)
    if store.exists(out.join(INDEX_FILE)):
        raise StorageError(f"{out.uri} already holds a data set: ingest into a new --out or delete it first")
    rows, caption_errors = parse_captions(store.read(cfg.captions), captions_format(str(cfg.captions)))
    prefix = src.uri.rstrip("/") + "/"
    captions_uri = parse_uri(cfg.captions).uri
    files = {o.uri.removeprefix(prefix): o for o in store.list(src)
             if o.uri != captions_uri and not any(p.startswith(".") for p in o.uri.removeprefix(prefix).split("/"))}
    refused = [{"path": e.path, "reason": f"captions line {e.line}: {e.reason}"} for e in caption_errors]
    refused += [{"path": p, "reason": "a caption row names this path but no such file is under the source"}
                for p in sorted(rows) if p not in files]
    allowed = {a.lower() for a in cfg.allow_licences}
    tasks = []
    for path in sorted(files):
        row = rows.get(path)
        if too_big := size_problem(files[path].size, cfg.limits()):  # refused by the listing's size, unread
            refused.append({"path": path, "reason": too_big})
        elif row is None:
            refused.append({"path": path, "reason": "no caption row for this file in the captions file"})
        elif allowed and row.licence.lower() not in allowed:
            refused.append({"path": path, "reason": f"licence {row.licence!r} is not allowed "
                                                    f"(--allow-licence: {', '.join(cfg.allow_licences)})"})
        else:
            tasks.append({"path": path, "uri": files[path].uri})
    planned = eval_sources({rows[t["path"]].source for t in tasks}, cfg.eval_fraction, cfg.seed)
    governed = govern(_file_results(tasks, cfg, address, on_file), rows, cfg, store, refused, planned)
    clips, videos = governed.clips, governed.videos
    refused.sort(key=lambda r: r["path"])
    store.write(out.join(ERRORS), "".join(json.dumps(r) + "\n" for r in refused).encode())
    if not clips:
        raise StorageError(f"no clip could be made from {src.uri}: every file was refused (see "
                           f"{out.join(ERRORS).uri})")
    evals = {c["source"] for c in clips if c["split"] == "eval"}
    _check_eval_split(clips, evals, cfg.eval_fraction, out.join(ERRORS).uri)
    index = finish_dataset(store, out.uri, governed.entries,
                           *card(cfg, clips, videos, governed.dropped, refused, evals))
    return {"out": out.uri, "videos": len(videos), "clips": index.num_samples, "splits": index.counts(),
            "dropped": dict(governed.dropped), "refused": len(refused), "errors": out.join(ERRORS).uri,
            "source_seconds": round(sum(v["seconds"] for v in videos), 3)}


def _check_eval_split(clips: list[dict], evals: set[str], fraction: float, errors_uri: str) -> None:
    """StorageError when clips of two or more sources left the eval split empty with a fraction above 0: the eval
    sources' files were all refused or duplicates (an empty --eval-fraction 0 split is asked for, not refused)."""
    sources = {c["source"] for c in clips}
    if fraction > 0 and len(sources) >= 2 and not evals:
        raise StorageError(f"the eval split is empty: no clip of the {len(sources)} sources' eval sources survived "
                           f"(see {errors_uri}); ingest again into a new --out with a larger --eval-fraction or "
                           "another --seed")


def _file_results(tasks: list[dict], cfg: IngestConfig, address: str | None,
                  on_file: Callable[[dict, int], None] | None) -> Iterator[dict]:
    """Each file's result from the Ray Data tasks (one a file), in the tasks' (path) order, as each arrives."""
    if not tasks:
        return
    import ray

    connect_ray(address, credentials=cfg.s3.credentials_env(), dashboard=False)
    config = {**cfg.model_dump(mode="json", exclude={"s3"}), "s3": cfg.s3.public()}
    context = ray.data.DataContext.get_current()
    preserved = context.execution_options.preserve_order
    context.execution_options.preserve_order = True  # path order: which of two duplicates is kept never varies
    try:
        results = ray.data.from_items(tasks, override_num_blocks=len(tasks)).map(
            _ingest_file, fn_kwargs={"config": config})
        for result in results.iter_rows():
            if on_file:
                on_file(result, len(tasks))
            yield result
    finally:
        context.execution_options.preserve_order = preserved


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, IngestConfig)
    if not cfg.command:
        cfg = cfg.model_copy(update={"command": "python -m jobs.ingest " + shlex.join(argv or sys.argv[1:])})
    summary = ingest(cfg, args.address, lambda r, total: log.info("%s: %s", r["path"], r["error"] or "ok"))
    log.info("data set ready: %s", json.dumps(summary))
    return 2 if summary["refused"] else 0


if __name__ == "__main__":
    sys.exit(main())
