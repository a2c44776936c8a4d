"""What one file may cost the decoder: bytes read, source frames decoded and wall-clock time are bounded, each
refusal a FootageError naming the limit (the files come from the ffmpeg in imageio-ffmpeg; nothing downloaded)."""

import io

import pytest

from examples.test_videos import synthesize
from storage.footage import FootageError, FootageLimits, read_footage


class CountingFile(io.RawIOBase):
    """A real file whose reads are counted: what the decoder pulled through it."""

    def __init__(self, path):
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size=-1) -> bytes:
        data = self.file.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset, whence=io.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()
        super().close()


def test_a_file_over_max_bytes_is_refused_before_a_byte_is_read(tmp_path):
    big = tmp_path / "big.mp4"
    with open(big, "wb") as f:  # 50 MB, sparse on disk
        f.truncate(50 * 2**20)
    with CountingFile(big) as counted, pytest.raises(FootageError, match=r"52428800 bytes; at most 1048576"):
        read_footage(counted, 8, 32, 32, FootageLimits(max_bytes=2**20))
    assert counted.bytes_read == 0


def test_a_file_within_max_bytes_is_streamed_to_the_decoder(tmp_path):
    path = synthesize(tmp_path / "v.mp4", "testsrc2", "160x120", "25", 2, ["-c:v", "libx264"])
    with CountingFile(path) as counted:
        footage = read_footage(counted, 8, 32, 32)
    assert footage.frames.shape == (16, 32, 32, 3) and counted.bytes_read >= path.stat().st_size


def test_a_high_frame_rate_clip_over_max_frames_is_refused(tmp_path):
    fast = synthesize(tmp_path / "fast.mp4", "testsrc2", "64x64", "1000", 0.3, ["-c:v", "libx264"]).read_bytes()
    within_seconds = FootageLimits(max_seconds=3600, max_frames=100)  # 0.3 s, but 300 source frames to decode
    with pytest.raises(FootageError, match="at most 100 source frames are decoded"):
        read_footage(fast, 8, 32, 32, within_seconds)
    assert read_footage(fast, 8, 32, 32, FootageLimits(max_frames=300)).frames.shape[0] == 3


def test_a_file_over_its_time_limit_is_refused(tmp_path):
    good = synthesize(tmp_path / "v.mp4", "testsrc2", "160x120", "25", 2, ["-c:v", "libx264"]).read_bytes()
    with pytest.raises(FootageError, match="took over 1e-06 s"):  # a deadline no real decode can meet
        read_footage(good, 8, 32, 32, FootageLimits(max_file_seconds=1e-6))
