"""What one ingested file may cost, and what the driver holds: in-process (a file's task is a plain function; the
driver's governing takes any iterator of file results), so no Ray."""

import json
import tracemalloc

import pytest

from examples.test_videos import synthesize
from jobs.ingest import IngestConfig, _ingest_file, govern
from storage.captions import CaptionRow
from storage.objectstore import ObjectStore
from storage.shards import SHARD_FOLDER, Index


def _config(src, out, **kw) -> dict:
    return IngestConfig(src=str(src), captions=str(src / "captions.csv"), out=str(out), **kw).model_dump(mode="json")


def test_a_file_over_max_bytes_is_an_error_row_without_being_read(tmp_path):
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:  # 400 MB, sparse on disk
        f.truncate(400 * 2**20)
    tracemalloc.start()
    try:
        result = _ingest_file({"path": "big.mp4", "uri": str(big)}, _config(tmp_path, tmp_path / "out",
                                                                           max_bytes=2**20))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result["error"] == "the file is 419430400 bytes; at most 1048576 bytes (FootageLimits.max_bytes)"
    assert peak < 2**20  # the old code read all 400 MB before refusing


def test_a_high_frame_rate_file_is_an_error_row_and_a_slow_one_too(tmp_path):
    fast = synthesize(tmp_path / "fast.mp4", "testsrc2", "64x64", "1000", 0.5, ["-c:v", "libx264"])
    result = _ingest_file({"path": "fast.mp4", "uri": str(fast)}, _config(tmp_path, tmp_path / "out",
                                                                         max_frames=200))
    assert "at most 200 source frames are decoded" in result["error"] and result["mp4"] == []
    slow = _ingest_file({"path": "fast.mp4", "uri": str(fast)}, _config(tmp_path, tmp_path / "out",
                                                                       max_file_seconds=1e-6))
    assert "max_file_seconds" in slow["error"]


# seeded sources that keep changing: no clip is a near duplicate of another
SOURCES = {"a.mp4": "testsrc2", "b.mp4": "life=seed=1", "c.mp4": "cellauto=seed=9:rule=30"}


def test_the_driver_writes_shards_as_clips_arrive(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name, source in SOURCES.items():
        synthesize(src / name, source, "64x64", "8", 2, ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    cfg = IngestConfig.model_validate(_config(src, out, frames=2, samples_per_shard=1, eval_fraction=0))
    rows = {p: CaptionRow(i + 2, p, f"video {p}", "cc0-1.0", p) for i, p in enumerate(SOURCES)}
    seen = []  # (clips handed to the driver so far, shards on disk) when the next file's result is asked for

    def results():
        handed = 0
        for path in SOURCES:
            seen.append((handed, len(list((out / SHARD_FOLDER).glob("*.tar")))))
            result = _ingest_file({"path": path, "uri": str(src / path)}, cfg.model_dump(mode="json"))
            handed += len(json.loads(result["clips"]))
            yield result

    refused = []
    governed = govern(results(), rows, cfg, ObjectStore(), refused)
    assert not refused and sum(governed.dropped.values()) == 0 and len(governed.clips) == 24  # 8 clips a file
    assert seen[0] == (0, 0)
    for handed, on_disk in seen[1:]:  # at most 4 shards in flight: the rest already written, their videos let go
        assert on_disk >= handed - 4 > 0
    assert sorted(e.name for e in governed.entries) == [f"train-{n:05d}.tar" for n in range(24)]
    assert Index(governed.entries, "").num_samples == 24


@pytest.mark.parametrize("fraction", [0.0, 0.99])
def test_the_split_of_a_source_is_decided_as_its_first_clip_arrives(fraction):
    from jobs.ingest import eval_sources, is_eval_source

    sources = {f"s{i}" for i in range(20)}
    assert eval_sources(sources, fraction, 3) == {s for s in sources if is_eval_source(s, fraction, 3)}
