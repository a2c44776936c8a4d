"""Issue 29, item 5: ingest of two or more sources never leaves the eval split silently empty, and `vidgen data
verify` says when a split is empty rather than report a vacuous leakage check as clean. In-process: the driver's
governing takes any iterator of file results, so no Ray."""

import json

import pytest
from typer.testing import CliRunner

from examples.test_videos import synthesize
from jobs.ingest import IngestConfig, _check_eval_split, _ingest_file, card, eval_sources, govern, is_eval_source
from storage.captions import CaptionRow
from storage.datasets import empty_splits, finish_dataset
from storage.objectstore import ObjectStore, StorageError
from vidgen.cli import app

SOURCES = {"a.mp4": "testsrc2", "b.mp4": "life=seed=1", "c.mp4": "cellauto=seed=9:rule=30"}
SEED = 2  # no source's own draw is below 0.1 at this seed: the old rule made no eval split at all


def test_two_or_more_sources_always_give_an_eval_source():
    assert not any(is_eval_source(s, 0.1, SEED) for s in SOURCES)
    assert len(eval_sources(set(SOURCES), 0.1, SEED)) == 1
    assert eval_sources({"a.mp4"}, 0.1, SEED) == set()  # one source: it trains
    assert eval_sources(set(SOURCES), 0.0, SEED) == set()  # --eval-fraction 0 asks for no eval split
    many = {f"cam-{i}" for i in range(40)}
    assert eval_sources(many, 0.5, SEED) == {s for s in many if is_eval_source(s, 0.5, SEED)}


def _ingest_in_process(tmp_path, **config) -> tuple[str, dict]:
    """Ingest SOURCES into tmp_path/out through the driver's own governing and card, without Ray."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    for name, source in SOURCES.items():
        synthesize(src / name, source, "64x64", "8", 1, ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    cfg = IngestConfig(src=str(src), captions=str(src / "captions.csv"), out=str(out), frames=2, seed=SEED,
                       **config)
    rows = {p: CaptionRow(i + 2, p, f"video {p}", "cc0-1.0", p) for i, p in enumerate(SOURCES)}
    results = (_ingest_file({"path": p, "uri": str(src / p)}, cfg.model_dump(mode="json")) for p in SOURCES)
    refused = []
    governed = govern(results, rows, cfg, ObjectStore(), refused)
    evals = {c["source"] for c in governed.clips if c["split"] == "eval"}
    index = finish_dataset(ObjectStore(), str(out), governed.entries,
                           *card(cfg, governed.clips, governed.videos, governed.dropped, refused, evals))
    return str(out), index.counts()


def test_three_sources_at_the_default_fraction_fill_the_eval_split(tmp_path):
    out, counts = _ingest_in_process(tmp_path)
    assert counts == {"train": 8, "eval": 4}  # 4 two-frame clips a source; one source of three held out
    result = CliRunner().invoke(app, ["data", "verify", out])
    assert result.exit_code == 0 and "no eval or held-out clip is in train" in result.output


def test_verify_says_when_the_eval_split_is_empty(tmp_path):
    out, counts = _ingest_in_process(tmp_path, eval_fraction=0)
    assert counts == {"train": 12}
    result = CliRunner().invoke(app, ["data", "verify", out])
    assert result.exit_code == 0, result.output
    assert "the eval split is empty" in result.output and "no eval or held-out clip is in train" not in result.output


def test_an_eval_split_whose_sources_gave_no_clip_is_refused_naming_the_fraction():
    clips = [{"source": "a.mp4", "split": "train"}, {"source": "b.mp4", "split": "train"}]
    with pytest.raises(StorageError, match="the eval split is empty.*--eval-fraction"):
        _check_eval_split(clips, set(), 0.1, "out/errors.jsonl")
    _check_eval_split(clips, set(), 0.0, "out/errors.jsonl")  # asked for
    _check_eval_split(clips[:1], set(), 0.1, "out/errors.jsonl")  # one source: nothing to hold out


def test_empty_splits_names_the_missing_split():
    from storage.shards import Index, SampleEntry, ShardEntry

    train = ShardEntry("train-00000.tar", "train", "0" * 64, 1, [SampleEntry("k", "0" * 64, "0" * 64, "k", "g")])
    assert empty_splits(Index([train], "0" * 64)) == ["eval"]
    assert json.dumps(empty_splits(Index([], "0" * 64))) == '["train", "eval"]'
