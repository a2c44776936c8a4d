"""Metrics: prompt accuracy read back from pixels by an analytic detector, plus PSNR and SSIM.

The detector knows the built-in world (`vidgen.synth`): one saturated shape over a near-grey background.
- foreground: pixels whose saturation (max - min of RGB) is well above the background's;
- colour: the palette colour whose hue is nearest the foreground's mean hue;
- direction: the sign of the dominant axis of the centroid's least-squares velocity over frames;
- shape: per frame, the template (circle, square, apex-up triangle) of the same area and centroid with the
  highest IoU against the foreground mask, voted over frames. IoU against a template tolerates ragged edges
  far better than bounding-box ratios, where one stray pixel moves the box.
Agreement with ground truth on rendered clips is checked by `tests/vidgen/test_metrics.py`.
"""

from __future__ import annotations

import colorsys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from vidgen.synth import COLOURS, DIRECTIONS, SHAPES

SATURATION_THRESHOLD = 0.35  # background saturation stays under 0.1; palette colours are over 0.75
MIN_PIXELS = 12  # a frame with fewer foreground pixels holds no shape
_PALETTE_HUES = {name: colorsys.rgb_to_hsv(*rgb)[0] for name, rgb in COLOURS.items()}


@dataclass(frozen=True)
class Detection:
    """What the detector read from one clip; None where an attribute could not be read."""

    colour: str | None
    shape: str | None
    direction: str | None


def _as_float_clip(clip: np.ndarray | torch.Tensor) -> np.ndarray:
    """(T, H, W, 3) floats in [0, 1] from uint8 or float input."""
    array = clip.detach().cpu().numpy() if isinstance(clip, torch.Tensor) else np.asarray(clip)
    if array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"clip must be (T, H, W, 3), got shape {array.shape}")
    return array.astype(np.float64) / 255.0 if array.dtype == np.uint8 else array.astype(np.float64)


def _hue_distance(a: float, b: float) -> float:
    d = abs(a - b) % 1.0
    return min(d, 1.0 - d)


def _template(shape: str, area: float, cx: float, cy: float, h: int, w: int) -> np.ndarray:
    """Boolean mask of `shape` with the given pixel area, placed so its centroid is (cx, cy)."""
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        r = np.sqrt(area / np.pi)
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        r = np.sqrt(area) / 2
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    r = np.sqrt(area / 2)  # apex-up triangle, base 2r, height 2r; centroid sits r/3 below the box centre
    dy = dy + r / 3
    return (dy <= r) & (dy >= -r) & (np.abs(dx) <= r * (dy + r) / (2 * r))


def _best_template(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    cx, cy, area = xs.mean(), ys.mean(), float(mask.sum())
    ious = {}
    for shape in SHAPES:
        tmpl = _template(shape, area, cx, cy, *mask.shape)
        ious[shape] = (tmpl & mask).sum() / max((tmpl | mask).sum(), 1)
    return max(ious, key=ious.get)


def detect(clip: np.ndarray | torch.Tensor) -> Detection:
    """Read colour, shape and direction from one clip (T, H, W, 3), uint8 or floats in [0, 1]."""
    x = _as_float_clip(clip)
    saturation = x.max(axis=-1) - x.min(axis=-1)  # (T, H, W)
    masks = saturation > SATURATION_THRESHOLD
    frames = [i for i in range(len(x)) if masks[i].sum() >= MIN_PIXELS]
    if not frames:
        return Detection(None, None, None)

    fg = x[masks]  # (N, 3)
    hue = colorsys.rgb_to_hsv(*fg.mean(axis=0))[0]
    colour = min(_PALETTE_HUES, key=lambda name: _hue_distance(hue, _PALETTE_HUES[name]))

    shape = Counter(_best_template(masks[i]) for i in frames).most_common(1)[0][0]

    direction = None
    if len(frames) >= 2:
        centroids = np.array([np.argwhere(masks[i]).mean(axis=0) for i in frames])  # (F, 2) as (y, x)
        t = np.asarray(frames, dtype=np.float64)
        vy, vx = np.polyfit(t, centroids, 1)[0]
        step = (int(np.sign(vx)), 0) if abs(vx) >= abs(vy) else (0, int(np.sign(vy)))
        direction = next((name for name, d in DIRECTIONS.items() if d == step), None)
    return Detection(colour, shape, direction)


@dataclass(frozen=True)
class PromptAccuracy:
    """Fraction of clips whose detected attributes match the prompt's, per attribute and all three at once."""

    colour: float
    shape: float
    direction: float
    all_three: float
    n: int

    def to_dict(self) -> dict:
        return {"colour": self.colour, "shape": self.shape, "direction": self.direction,
                "all_three": self.all_three, "n": self.n}


def prompt_accuracy(clips, truths: list[tuple[str, str, str]]) -> PromptAccuracy:
    """Score clips (iterable of (T, H, W, 3)) against (colour, shape, direction) truths."""
    hits = np.zeros((len(truths), 3), dtype=bool)
    for row, (clip, truth) in enumerate(zip(clips, truths, strict=True)):
        d = detect(clip)
        hits[row] = (d.colour == truth[0], d.shape == truth[1], d.direction == truth[2])
    n = len(truths)
    if n == 0:
        raise ValueError("prompt_accuracy needs at least one clip")
    colour, shape, direction = hits.mean(axis=0)
    return PromptAccuracy(float(colour), float(shape), float(direction), float(hits.all(axis=1).mean()), n)


def temporal_consistency(clip: np.ndarray) -> float:
    """1 - the mean absolute difference of consecutive frames (pixels in [0, 1]), after VBench's flicker score: 1
    for a still clip, lower the more it flickers; it needs no model, so it probes any model's clips."""
    frames = np.asarray(clip, dtype=np.float32) / 255.0
    if len(frames) < 2:
        return 1.0
    return float(1.0 - np.abs(np.diff(frames, axis=0)).mean())


def _to_btchw(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) or (T, H, W, 3), uint8 or floats in [0, 1] -> float (B*T, 3, H, W) for image metrics."""
    x = torch.as_tensor(x)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.ndim == 4:
        x = x.unsqueeze(0)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"expected (B, T, H, W, 3) or (T, H, W, 3), got {tuple(x.shape)}")
    return x.reshape(-1, *x.shape[2:]).permute(0, 3, 1, 2)


def psnr(pred, target) -> float:
    """Peak signal-to-noise ratio in dB over all frames; clips are uint8 or floats in [0, 1]."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(_to_btchw(pred), _to_btchw(target), data_range=1.0))


def ssim(pred, target) -> float:
    """Mean structural similarity over frames; clips are uint8 or floats in [0, 1]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    return float(structural_similarity_index_measure(_to_btchw(pred), _to_btchw(target), data_range=1.0))
