"""`vidgen data ingest` on a real local Ray: real and synthesised videos of many codecs, hostile files, duplicates,
a licence allow-list; a split by source that `vidgen data verify` proves; a bucket on the loopback S3 in and out."""

import json
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from examples.test_videos import SYNTHETIC, ffmpeg, make_corpus, real_clip, synthesize
from jobs.ingest import IngestConfig, ingest
from storage.datasets import leakage_problems, open_dataset, verify_dataset
from storage.objectstore import ObjectStore
from storage.phash import clip_phash
from storage.shards import Index, SampleEntry, ShardEntry
from vidgen.cli import app

HOSTILE = {"broken/empty.mp4", "broken/text.mp4", "broken/truncated.mp4", "broken/bomb.mp4", "broken/short.mp4",
           "broken/audio.mp4"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder of videos with captions.csv: the example corpus, duplicates of two of its videos under other
    sources, hostile files, a video without a caption row and a caption row without a video."""
    folder = make_corpus(tmp_path_factory.mktemp("videos") / "src")
    (folder / "dup").mkdir()
    shutil.copyfile(folder / "testsrc-h264.mp4", folder / "dup" / "exact.mp4")
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-i", str(real_clip("bigbuckbunny.mp4")), "-vf", "scale=640:360",
                    "-c:v", "libvpx-vp9", "-b:v", "300k", "-an", str(folder / "dup" / "near.webm")], check=True)
    (folder / "broken").mkdir()
    good = (folder / "testsrc-h264.mp4").read_bytes()
    (folder / "broken" / "empty.mp4").write_bytes(b"")
    (folder / "broken" / "text.mp4").write_text("not a video, whatever its name says\n" * 20)
    (folder / "broken" / "truncated.mp4").write_bytes(good[: len(good) // 3])
    synthesize(folder / "broken" / "bomb.mp4", "color=c=blue", "8192x8192", "5", 0.2,
               ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    synthesize(folder / "broken" / "short.mp4", "testsrc2", "64x64", "25", 0.5, ["-c:v", "libx264"])
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac",
                    str(folder / "broken" / "audio.mp4")], check=True)
    shutil.copyfile(folder / "life-mpeg4.avi", folder / "nocaption.avi")
    rows = (folder / "captions.csv").read_text().splitlines()
    rows += ["dup/exact.mp4,the test pattern again,cc0-1.0,uploader-2",
             "dup/near.webm,the rabbit again,cc-by-3.0,uploader-3",
             "missing.mp4,a video nobody copied,cc0-1.0,"]
    rows += [f"{path},hostile,cc0-1.0,hostile-{i}" for i, path in enumerate(sorted(HOSTILE))]
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture(scope="module")
def ingested(ray_cluster, corpus, tmp_path_factory):
    """(OUT, the CLI's result) of `vidgen data ingest` on the corpus, two licences allowed."""
    out = tmp_path_factory.mktemp("ingested") / "data"
    result = CliRunner().invoke(app, ["data", "ingest", str(corpus), "--captions", str(corpus / "captions.csv"),
                                      "--out", str(out), "--allow-licence", "cc0-1.0", "--allow-licence",
                                      "CC-BY-3.0", "--eval-fraction", "0.4", "--seed", "3"])
    return out, result


def test_ingest_refuses_every_bad_file_dedupes_and_splits_by_source(ingested, corpus):
    out, result = ingested
    assert result.exit_code == 2, result.output  # some files refused
    assert "files or caption rows refused" in result.output
    errors = {e["path"]: e["reason"] for e in map(json.loads, (out / "errors.jsonl").read_text().splitlines())}
    assert set(errors) == HOSTILE | {"nocaption.avi", "missing.mp4", "real/bikes.mp4", "real/carphone_pristine.mp4"}
    assert "empty (0 bytes)" in errors["broken/empty.mp4"] and "not a video container" in errors["broken/text.mp4"]
    assert "pixels" in errors["broken/bomb.mp4"] and "shorter than one window" in errors["broken/short.mp4"]
    assert "no video stream" in errors["broken/audio.mp4"] and "not a readable mp4" in errors["broken/truncated.mp4"]
    assert "no caption row" in errors["nocaption.avi"] and "no such file" in errors["missing.mp4"]
    assert "licence 'unknown' is not allowed" in errors["real/bikes.mp4"]

    store = ObjectStore()
    dataset = open_dataset(store, str(out))
    card = dataset.card
    assert card["dropped"]["exact duplicate"] >= 3 and card["dropped"]["near duplicate"] >= 4  # + static windows
    assert card["clip_shape"] == [8, 32, 32, 3] and card["split_by"] == "source"
    assert set(card["licences"]) == {"cc0-1.0", "cc-by-3.0"} and card["refused_files"] == len(errors)
    assert {"h264 in mp4", "vp9 in matroska", "hevc in matroska", "mpeg4 in avi", "mjpeg in mp4",
            "gif in gif"} <= set(card["codecs_seen"])
    assert "240x320" in card["resolutions_seen"] and "1280x720" in card["resolutions_seen"]
    assert card["command"].startswith("vidgen data ingest")
    sources = {split: {s.group for sh in dataset.shards((split,)) for s in sh.samples} for split in ("train", "eval")}
    assert sources["train"] and sources["eval"] and not sources["train"] & sources["eval"]
    assert set(card["heldout_groups"]) == sources["eval"]
    kept = sources["train"] | sources["eval"]
    # each duplicated video is kept once, under the source of its first path ("dup/..." sorts first)
    assert "uploader-2" in kept and "lavfi/testsrc-h264.mp4" not in kept
    assert "uploader-3" in kept and "Blender Foundation, Big Buck Bunny" not in kept
    assert verify_dataset(store, str(out)) == []
    verified = CliRunner().invoke(app, ["data", "verify", str(out)])
    assert verified.exit_code == 0, verified.output

    assert len(kept) == len(SYNTHETIC) + 1  # + the rabbit; the other real clips' licence is not allowed
    again = CliRunner().invoke(app, ["data", "ingest", str(corpus), "--captions", str(corpus / "captions.csv"),
                                     "--out", str(out)])
    assert again.exit_code == 1 and "already holds a data set" in again.output


def test_the_leakage_check_catches_a_source_or_a_near_duplicate_in_both_splits(corpus):
    from storage.footage import read_footage, windows

    clips = [c for _, c in windows(read_footage(real_clip("bigbuckbunny.mp4").read_bytes(), 8, 32, 32).frames, 8, 8)]
    near = clips[0].copy()
    near[:, :2] = 0  # two black rows: not the same pixels, perceptually the same clip

    def entry(key, clip, group, split):
        return ShardEntry(f"{split}-00000.tar", split, "0" * 64, 1, [
            SampleEntry(key, "0" * 64, "0" * 64, key * 8, group, clip_phash(clip))])

    index = Index([entry("a", clips[0], "cam-1", "train"), entry("b", near, "cam-2", "eval")], "0" * 64)
    problems = leakage_problems(index, heldout_groups=["cam-2"])
    assert len(problems) == 1 and "near-duplicate of train sample 'a'" in problems[0]
    index = Index([entry("a", clips[0], "cam-1", "train"), entry("b", clips[3], "cam-1", "eval")], "0" * 64)
    assert "held-out composition cam-1" in leakage_problems(index, heldout_groups=["cam-1"])[0]


def test_ingest_from_a_bucket_into_a_bucket(ray_cluster, corpus, s3_config, bucket):
    store = ObjectStore(s3_config)
    for name in ("testsrc-h264.mp4", "mandelbrot-vp9.webm", "bars-hevc.mkv"):
        store.copy_from_local(corpus / name, f"{bucket}/videos/{name}")
    captions = "\n".join(json.dumps({"path": name, "text": f"video {name}", "license": "cc0-1.0"})
                         for name in ("testsrc-h264.mp4", "mandelbrot-vp9.webm", "bars-hevc.mkv"))
    store.write(f"{bucket}/captions.jsonl", captions.encode())
    summary = ingest(IngestConfig(src=f"{bucket}/videos", captions=f"{bucket}/captions.jsonl",
                                  out=f"{bucket}/data", eval_fraction=0.5, seed=1, s3=s3_config))
    assert summary["videos"] == 3 and summary["refused"] == 0 and summary["clips"] == sum(summary["splits"].values())
    assert 6 <= summary["clips"] <= 3 + 3 + 2  # windows of the static colour bars are duplicates of each other
    assert store.read(f"{bucket}/data/errors.jsonl") == b""
    assert verify_dataset(store, f"{bucket}/data") == []


def test_a_model_trains_on_ingested_clips_reusing_the_shipped_autoencoder(ingested, encoder, tmp_path):
    from storage.cards import parse_card
    from vidgen.runs.local_training import train_to_folder
    from vidgen.training import TrainConfig

    out, _ = ingested
    cfg = TrainConfig(model={"dim": 48, "depth": 2, "heads": 2}, max_steps=40, batch_size=8, warmup_steps=5,
                      sampler={"steps": 2}, eval_every_minutes=None)
    summary = train_to_folder(cfg, tmp_path / "model", encoder=encoder, data=str(out), autoencoder="shapes-tiny")
    losses = [float(line.split(",")[0]) for line in (tmp_path / "model" / "metrics.csv").read_text().splitlines()[1:]]
    assert summary["steps"] == 40 and sum(losses[-10:]) < 0.8 * sum(losses[:10])  # the loss falls
    # reused: it learnt the built-in world, so it reconstructs real clips only coarsely (measured 0.14 on [-1, 1])
    assert summary["final"] == {} and 0 < summary["autoencoder_mse"] < 0.5
    meta, body = parse_card((tmp_path / "model" / "card.md").read_text())
    assert meta["lineage"]["dataset"] == str(out) and meta["lineage"]["autoencoder_from"] == "shapes-tiny"
    assert "prompt_accuracy_seen" not in meta["metrics"] and "Prompt accuracy is not" in body
    # the privacy check ran on its training clips (up to 16 training captions) and is in the card
    memorization = summary["memorization"]
    assert memorization["training_captions"]["clips"] == min(16, memorization["training_clips"]) > 0
    assert memorization["heldout_prompts"]["clips"] == 16 and "## Memorization (privacy)" in body
    assert meta["metrics"]["memorization_extracted_share_training_captions"] == \
        summary["memorization"]["training_captions"]["extracted_share"]
    wrong = TrainConfig(model={"dim": 48, "depth": 2, "heads": 2, "frames": 16}, max_steps=2, batch_size=2)
    with pytest.raises(ValueError, match="holds 8x32x32 clips and the model makes 16x32x32"):
        train_to_folder(wrong, tmp_path / "wrong", encoder=encoder, data=str(out))
