"""Sensitivity of the perceptual metrics: each one against graded corruptions of clips of the built-in world.

Reference: N clips of the world. Each row is a corruption at three strengths applied to a second, independent set
of N clips of the same prompts' distribution (new seeds), so "none" is two independent samples of the reference
distribution, the floor every corruption must rise above:
  noise    Gaussian pixel noise, sigma in [0, 1] units
  blur     Gaussian blur of each frame, sigma in pixels
  shuffle  the share of clips whose frames are randomly reordered
  speed    the shape's speed multiplied (clips re-rendered from their specs)
  colour   every pixel shifted towards red and away from blue

    python benchmarks/perceptual.py --clips 512 --frame-clips 64
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from vidgen import synth
from vidgen.metrics import temporal_consistency
from vidgen.perceptual import feature_distances, frame_features, subject_consistency, video_features

LEVELS = {"noise": (0.1, 0.2, 0.3), "blur": (0.6, 1.2, 2.5), "shuffle": (0.25, 0.5, 1.0),
          "speed": (1.4, 2.0, 3.0), "colour": (0.04, 0.1, 0.25)}
METRICS = ("fd_frames", "kid_frames", "fvd_vidgen", "kvd_vidgen", "subject_consistency", "flicker")


def _blur(clips: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    b, t, h, w, c = clips.shape
    frames = torch.from_numpy(clips).float().reshape(b * t, h, w, c).permute(0, 3, 1, 2).reshape(-1, 1, h, w)
    frames = F.pad(frames, (radius, radius, radius, radius), mode="replicate")
    frames = F.conv2d(F.conv2d(frames, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    frames = frames.reshape(b * t, c, h, w).permute(0, 2, 3, 1).reshape(b, t, h, w, c)
    return frames.round().clamp(0, 255).byte().numpy()


def corrupt(clips: np.ndarray, specs: list[synth.ClipSpec], kind: str, level: float, seed: int = 0) -> np.ndarray:
    """The clips (uint8 (B, T, H, W, 3), rendered from `specs`) with one corruption at one strength."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return (clips + rng.normal(0, level * 255, clips.shape)).round().clip(0, 255).astype(np.uint8)
    if kind == "blur":
        return _blur(clips, level)
    if kind == "shuffle":
        out = clips.copy()
        for i in rng.choice(len(clips), int(round(level * len(clips))), replace=False):
            order = rng.permutation(clips.shape[1])
            while np.array_equal(order, np.arange(clips.shape[1])):
                order = rng.permutation(clips.shape[1])
            out[i] = clips[i][order]
        return out
    if kind == "speed":
        return synth.render_batch([dataclasses.replace(s, speed=s.speed * level) for s in specs])
    if kind == "colour":
        shift = np.array([level, 0.0, -level]) * 255
        return (clips + shift).round().clip(0, 255).astype(np.uint8)
    raise ValueError(f"unknown corruption {kind!r}; choose from {sorted(LEVELS)}")


class SeenFrameFeatures:
    """Frame features of clips, computed once per distinct frame: shuffled clips are frames already seen, and so is
    the first frame of a clip re-rendered at another speed (the image network is the table's slow part)."""

    def __init__(self, network):
        self.network, self.seen = network, {}

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        """Per-frame features (B, T, D) of uint8 clips (B, T, H, W, 3), as `frame_features` gives them."""
        b, t = clips.shape[:2]
        frames = clips.reshape(b * t, 1, *clips.shape[2:])  # (B*T, 1, H, W, 3): each frame a one-frame clip
        keys = [frame.tobytes() for frame in frames]
        new = list({key: i for i, key in enumerate(keys) if key not in self.seen}.items())
        if new:
            got = frame_features(self.network, frames[[i for _, i in new]])  # (N, 1, D)
            self.seen.update((key, row[0]) for (key, _), row in zip(new, got, strict=True))
        return np.stack([self.seen[key] for key in keys]).reshape(b, t, -1)


def scores(reference: dict, clips: np.ndarray, frame_net, video_net, frame_clips: int) -> dict[str, float]:
    """Every metric of `clips` against the reference's features (`features` of the reference clips)."""
    got = features(clips, frame_net, video_net, frame_clips)
    return {**feature_distances(got["frames"], reference["frames"], got["video"], reference["video"]),
            "subject_consistency": float(np.mean([subject_consistency(f) for f in got["frames"]])),
            "flicker": float(np.mean([temporal_consistency(c) for c in clips[:frame_clips]]))}


def features(clips: np.ndarray, frame_net, video_net, frame_clips: int) -> dict[str, np.ndarray]:
    """Frame features of the first `frame_clips` clips (`frame_net`: a `SeenFrameFeatures`), video features of all."""
    return {"frames": frame_net(clips[:frame_clips]), "video": video_features(video_net, clips)}


def sensitivity(n: int, frame_clips: int | None = None, kinds=tuple(LEVELS), seed: int = 0) -> dict:
    """{"none": scores of an independent sample, kind: [scores at each level]} against n reference clips (frame
    metrics on the first `frame_clips` of them; default all)."""
    frame_clips = frame_clips or n
    from vidgen.runs.feature_nets import efficientnet_lite0, video_feature_net

    frame_net, video_net = SeenFrameFeatures(efficientnet_lite0()), video_feature_net()
    reference = features(synth.render_batch(synth.sample_specs(n, 30_000_000 + seed)), frame_net, video_net,
                         frame_clips)
    specs = synth.sample_specs(n, 40_000_000 + seed)
    clips = synth.render_batch(specs)
    table = {"none": scores(reference, clips, frame_net, video_net, frame_clips)}
    for kind in kinds:
        table[kind] = [scores(reference, corrupt(clips, specs, kind, level, seed), frame_net, video_net, frame_clips)
                       for level in LEVELS[kind]]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=512, help="clips in the reference and in each corrupted set")
    parser.add_argument("--frame-clips", type=int, default=64, help="of which the frame metrics see the first N")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = sensitivity(args.clips, args.frame_clips)
    print(f"{args.clips} clips a set ({args.frame_clips} for the frame metrics, subject consistency and flicker); "
          "reference and corrupted sets are independent samples of the world")
    print("| corruption | level | " + " | ".join(METRICS) + " |")
    print("|---|---|" + "---|" * len(METRICS))
    print("| none | | " + " | ".join(f"{table['none'][m]:.4g}" for m in METRICS) + " |")
    for kind, levels in LEVELS.items():
        for level, row in zip(levels, table[kind], strict=True):
            print(f"| {kind} | {level} | " + " | ".join(f"{row[m]:.4g}" for m in METRICS) + " |")
    shuffled = table["shuffle"][-1]
    floor = table["none"]
    print(f"all clips frame-shuffled: FVD-vidgen {shuffled['fvd_vidgen'] / max(floor['fvd_vidgen'], 1e-9):.1f}x "
          f"its floor, FD-frames {shuffled['fd_frames'] / max(floor['fd_frames'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
