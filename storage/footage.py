"""Other people's video files -> fixed-shape clips: open any container vidgen accepts, resample to a frame rate,
resize and centre-crop, cut into windows. Every file that cannot become a clip is a `FootageError` saying why.

The container is recognised from the file's first bytes, never left to FFmpeg's probing, which would also accept
playlists and scripts (`ffconcat`, HLS) that make the demuxer open other files. Size, duration, frame count and pixel
count are checked from the stream headers before anything is decoded, and again on every decoded frame (a stream may
lie in its header or change size mid-way): a decompression bomb is refused, not decoded.

What a file costs is bounded, not only what it is: the file is read as a stream (its size checked before the first
byte, and nothing past that size read, so a file that grows while read ends where it was measured), the source frames
decoded are counted against `max_frames` (a 1000 fps stream within `max_seconds` still decodes every frame), and a
wall-clock deadline (`max_file_seconds`) is checked on every read and every decoded frame.
"""

from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from storage.video import _reformatter


class FootageError(ValueError):
    """A video file that cannot become a clip, and why (one line)."""


@dataclass(frozen=True)
class FootageLimits:
    """What a file may be before vidgen refuses to decode it."""

    max_bytes: int = 2 * 1024**3
    max_pixels: int = 3840 * 2160  # a frame's width x height
    max_seconds: float = 3600.0
    # decode cost grows with source frames, not seconds: an hour at 60 fps; 4K H.264 decodes at ~3.4 ms a frame
    # on one core, so this many 4K frames cost ~12 CPU-minutes, and max_file_seconds stops it sooner
    max_frames: int = 216_000
    max_file_seconds: float = 600.0  # wall clock for one file: read, decode, resample


class _BoundedReader:
    """A file object for PyAV that reads nothing past `end` (the size measured before reading) and nothing after
    the deadline. PyAV turns an exception raised in a read into a generic FFmpeg error, so the deadline's reason is
    kept here, FFmpeg is handed EOF, and the caller raises it."""

    def __init__(self, source: BinaryIO, end: int, limits: FootageLimits, deadline: float):
        self.source, self.end, self.limits, self.deadline = source, end, limits, deadline
        self.problem: str | None = None

    def read(self, size: int = -1) -> bytes:
        self.problem = self.problem or _deadline_problem(self.deadline, self.limits)
        left = self.end - self.source.tell()
        if self.problem is not None or left <= 0:
            return b""
        return self.source.read(left if size is None or size < 0 else min(size, left))

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.source.seek(offset, whence)

    def tell(self) -> int:
        return self.source.tell()


def _deadline_problem(deadline: float, limits: FootageLimits) -> str | None:
    if time.monotonic() <= deadline:
        return None
    return (f"reading and decoding took over {limits.max_file_seconds:g} s (FootageLimits.max_file_seconds): "
            "refused, the task freed")


@dataclass
class Footage:
    """A video resampled to `fps` and resized/cropped to HxW: uint8 frames (N, H, W, 3) and what it was."""

    frames: np.ndarray
    codec: str
    container: str
    width: int
    height: int
    source_fps: float
    seconds: float


def container_format(head: bytes) -> str:
    """The demuxer for a file's first bytes: mp4/mov, matroska/webm, avi, gif or ogg; FootageError otherwise."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"OggS":
        return "ogg"
    if not head:
        raise FootageError("the file is empty (0 bytes)")
    raise FootageError("not a video container vidgen reads (MP4/MOV, MKV/WebM, AVI, GIF or Ogg, by its first bytes)")


def _scaled_size(width: int, height: int, out_h: int, out_w: int) -> tuple[int, int]:
    """The smallest size with the source's aspect that covers out_h x out_w (then centre-cropped)."""
    scale = max(out_w / width, out_h / height)
    return max(out_w, math.ceil(width * scale)), max(out_h, math.ceil(height * scale))


def size_problem(size: int, limits: FootageLimits) -> str | None:
    """Why a file of `size` bytes is refused unread, or None."""
    if size > limits.max_bytes:
        return f"the file is {size} bytes; at most {limits.max_bytes} bytes (FootageLimits.max_bytes)"
    return None


def read_footage(source: bytes | BinaryIO, fps: float, height: int, width: int,
                 limits: FootageLimits = FootageLimits(), threads: int = 0) -> Footage:
    """Decode the first video stream of `source` (bytes, or a seekable binary file, read as a stream) at `fps` (each
    output frame is the last source frame shown at its time), resized so it covers HxW and centre-cropped. Audio
    and other streams are ignored. `threads`: decoder threads (0: FFmpeg's choice, frame and slice threads over
    every core; a Ray task holding one CPU passes 1)."""
    deadline = time.monotonic() + limits.max_file_seconds
    file = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    start = file.tell()
    size = file.seek(0, io.SEEK_END) - start
    if problem := size_problem(size, limits):
        raise FootageError(problem)
    file.seek(start)
    fmt = container_format(file.read(16))
    file.seek(start)
    reader = _BoundedReader(file, start + size, limits, deadline)
    try:
        return _decode(reader, fmt, fps, height, width, limits, threads)
    except FootageError as e:  # a read limit hands FFmpeg EOF: the limit is the reason, not what FFmpeg made of it
        raise FootageError(reader.problem or str(e)) from None


def _decode(reader: _BoundedReader, fmt: str, fps: float, height: int, width: int, limits: FootageLimits,
            threads: int) -> Footage:
    reformatter = _reformatter()
    out: list[np.ndarray] = []
    try:
        with av.open(reader, mode="r", format=fmt) as container:
            if not container.streams.video:
                raise FootageError(f"the {fmt} file holds no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO" if threads != 1 else "NONE"
            stream.codec_context.thread_count = threads
            ctx = stream.codec_context
            _check_pixels(ctx.width, ctx.height, limits)
            declared = _seconds(container, stream)
            if declared is not None and declared > limits.max_seconds:
                raise FootageError(f"the video lasts {declared:.0f} s; at most {limits.max_seconds:.0f} s "
                                   "(FootageLimits.max_seconds)")
            if stream.frames > limits.max_frames:
                raise FootageError(_frames_problem(f"declares {stream.frames} frames", limits))
            source_fps = float(stream.average_rate or stream.guessed_rate or 0) or fps
            size = _scaled_size(ctx.width, ctx.height, height, width)

            def rgb(frame) -> np.ndarray:
                return _crop(reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                                  interpolation="AREA").to_ndarray(), height, width)

            # output frame k (time k/fps) shows the last source frame whose time is <= k/fps; a source frame is
            # converted only if some output frame shows it
            first_time, last_time, previous, previous_rgb = None, 0.0, None, None
            for number, frame in enumerate(container.decode(stream)):
                if number >= limits.max_frames:
                    raise FootageError(_frames_problem(f"holds over {limits.max_frames} frames", limits))
                if problem := reader.problem or _deadline_problem(reader.deadline, limits):
                    raise FootageError(problem)
                _check_pixels(frame.width, frame.height, limits)
                if (frame.width, frame.height) != (ctx.width, ctx.height):
                    size = _scaled_size(frame.width, frame.height, height, width)
                t = frame.time if frame.time is not None else number / source_fps
                first_time = t if first_time is None else first_time
                last_time = t - first_time
                if last_time > limits.max_seconds:
                    raise FootageError(f"the video runs past {limits.max_seconds:.0f} s (FootageLimits.max_seconds)")
                while previous is not None and len(out) / fps < last_time:
                    previous_rgb = rgb(previous) if previous_rgb is None else previous_rgb
                    out.append(previous_rgb)
                previous, previous_rgb = frame, None
            end = last_time + 1 / source_fps
            while previous is not None and len(out) / fps < end - 1e-9:
                previous_rgb = rgb(previous) if previous_rgb is None else previous_rgb
                out.append(previous_rgb)
            codec, width_in, height_in = ctx.codec.canonical_name, ctx.width, ctx.height
    except av.error.FFmpegError as e:
        if out:  # frames decoded before the stream broke: refuse rather than keep a partial video
            raise FootageError(f"the {fmt} stream breaks after {len(out)} frames ({e}); the file is truncated or "
                               "uses a codec PyAV cannot decode fully") from None
        raise FootageError(f"not a readable {fmt} video ({e})") from None
    if reader.problem:  # FFmpeg took a cut-off read for the end of the file
        raise FootageError(reader.problem)
    if not out:
        raise FootageError("the video holds no frames")
    return Footage(np.stack(out), codec, fmt, width_in, height_in, source_fps, last_time + 1 / source_fps)


def _frames_problem(what: str, limits: FootageLimits) -> str:
    return (f"the video stream {what}; at most {limits.max_frames} source frames are decoded "
            "(FootageLimits.max_frames: decoding costs by the frame, whatever the frame rate)")


def _check_pixels(width: int, height: int, limits: FootageLimits) -> None:
    if width <= 0 or height <= 0:
        raise FootageError(f"the video stream declares no frame size ({width}x{height})")
    if width * height > limits.max_pixels:
        raise FootageError(f"frames of {width}x{height} are over {limits.max_pixels} pixels "
                           "(FootageLimits.max_pixels): refused before decoding")


def _seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _crop(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w, _ = frame.shape
    top, left = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(frame[top:top + height, left:left + width])


def windows(frames: np.ndarray, length: int, stride: int) -> list[tuple[int, np.ndarray]]:
    """(first frame index, clip) for every window of `length` frames, one every `stride` frames."""
    return [(start, frames[start:start + length]) for start in range(0, len(frames) - length + 1, stride)]
