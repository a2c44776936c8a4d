import numpy as np
import pytest

from storage import video
from vidgen import metrics, synth


@pytest.fixture(scope="module")
def clip():
    return synth.render(synth.sample_specs(1, seed=21)[0])


def test_mp4_round_trip_is_small_and_close(clip):
    data = video.encode(clip, "mp4")
    back = video.decode(data)
    assert data[4:8] == b"ftyp" and len(data) < 8_000  # 8x32x32x3 = 24 KB raw
    assert back.shape == clip.shape and back.dtype == np.uint8
    assert metrics.psnr(back, clip) > 30


def test_gif_round_trip_keeps_colours(clip):
    data = video.encode(clip, "gif")
    assert data[:6] == b"GIF89a"
    back = video.decode(data)
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip).mean() < 2


def test_write_picks_the_format_from_the_suffix(clip, tmp_path):
    assert video.decode(video.write(clip, tmp_path / "a" / "c.gif").read_bytes()).shape == clip.shape
    with pytest.raises(ValueError, match=".mp4 or .gif"):
        video.write(clip, tmp_path / "c.avi")
    assert not list(tmp_path.glob("**/*.partial"))


def test_bad_clips_are_refused(clip):
    with pytest.raises(ValueError, match=r"uint8 \(T, H, W, 3\)"):
        video.encode(clip.astype(np.float32))
    with pytest.raises(ValueError, match="even"):
        video.encode(clip[:, :31])
    with pytest.raises(ValueError, match="format"):
        video.encode(clip, "webm")
