"""The built-in world: seeded procedural clips of one coloured shape moving over a textured background.

Every clip is rendered from a `ClipSpec`, so it knows its ground truth (colour, shape, direction) and its
nuisance factors (speed, size, start position, background). Captions come from several templates with
synonyms; some templates are kept out of training (`PARAPHRASE_TEMPLATES`) to test prompt paraphrases, and a
fixed list of colour x shape x direction compositions (`HELD_OUT`) never appears in training.

Geometry is chosen so the detector in `vidgen.metrics` can read every attribute back: shapes are large
(10-15 px at 32x32), stay wholly inside the frame for the whole clip, and are strongly saturated over a
near-grey background.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

GENERATOR_VERSION = "shapes-v1"

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.12, 0.12),
    "green": (0.12, 0.85, 0.12),
    "blue": (0.15, 0.25, 0.95),
    "yellow": (0.92, 0.88, 0.10),
    "magenta": (0.90, 0.12, 0.88),
    "cyan": (0.10, 0.88, 0.90),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

COMPOSITIONS = tuple(itertools.product(COLOURS, SHAPES, DIRECTIONS))  # 72 (colour, shape, direction)
# Each colour, shape and direction still appears in training; only these combinations are unseen.
HELD_OUT = (
    ("red", "circle", "left"),
    ("green", "square", "up"),
    ("blue", "triangle", "right"),
    ("yellow", "circle", "down"),
    ("magenta", "square", "right"),
    ("cyan", "triangle", "up"),
)
TRAIN_COMPOSITIONS = tuple(c for c in COMPOSITIONS if c not in HELD_OUT)

SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "wedge", "pyramid"),
}
DIRECTION_WORDS = {
    "left": ("moving left", "drifting to the left", "sliding leftward", "heading left"),
    "right": ("moving right", "drifting to the right", "sliding rightward", "heading right"),
    "up": ("moving up", "drifting upward", "rising", "heading up"),
    "down": ("moving down", "drifting downward", "falling", "heading down"),
}
TRAIN_TEMPLATES = (
    "a {colour} {shape} {motion}",
    "{colour} {shape} {motion}",
    "a {colour} {shape} {motion} across the frame",
    "one {colour} {shape} {motion} over a grey background",
)
PARAPHRASE_TEMPLATES = (
    "video of a {colour} {shape} that is {motion}",
    "there is a {colour} {shape} {motion} in this clip",
)

FRAME_MARGIN = 1  # pixels kept free between the shape and the frame edge


@dataclass(frozen=True)
class ClipSpec:
    """Everything needed to render one clip, ground truth and nuisance factors alike."""

    colour: str
    shape: str
    direction: str
    caption: str
    size: float  # half-extent in pixels
    speed: float  # pixels per frame
    x0: float  # centre at frame 0
    y0: float
    background_seed: int
    brightness: float  # background mean grey level
    frames: int = 8
    height: int = 32
    width: int = 32

    @property
    def composition(self) -> tuple[str, str, str]:
        return (self.colour, self.shape, self.direction)


def caption_for(colour: str, shape: str, direction: str, rng: np.random.Generator, paraphrase: bool = False) -> str:
    """A caption from the training templates (or, with `paraphrase`, from the held-out ones)."""
    templates = PARAPHRASE_TEMPLATES if paraphrase else TRAIN_TEMPLATES
    template = templates[rng.integers(len(templates))]
    shape_word = SHAPE_WORDS[shape][rng.integers(len(SHAPE_WORDS[shape]))]
    motion = DIRECTION_WORDS[direction][rng.integers(len(DIRECTION_WORDS[direction]))]
    return template.format(colour=colour, shape=shape_word, motion=motion)


def parse_caption(prompt: str) -> tuple[str, str, str] | None:
    """(colour, shape, direction) named by a prompt in this world's words, or None if any is missing."""
    words = prompt.lower().replace(",", " ").split()
    text = " ".join(words)
    colour = next((c for c in COLOURS if c in words), None)
    shape = next((s for s, names in SHAPE_WORDS.items() if any(n in words for n in names)), None)
    direction = next((d for d, phrases in DIRECTION_WORDS.items() if any(p in text for p in phrases)), None)
    if direction is None:
        direction = next((d for d in DIRECTIONS if d in words or f"{d}ward" in words), None)
    return (colour, shape, direction) if colour and shape and direction else None


def sample_spec(
    rng: np.random.Generator,
    composition: tuple[str, str, str],
    frames: int = 8,
    height: int = 32,
    width: int = 32,
    paraphrase: bool = False,
) -> ClipSpec:
    """Draw the nuisance factors for one composition so the shape stays inside the frame throughout."""
    colour, shape, direction = composition
    scale = min(height, width) / 32
    size = float(rng.uniform(5.0, 7.5) * scale)
    speed = float(rng.uniform(0.8, 1.6) * scale * 8 / max(frames, 2))
    travel = speed * (frames - 1)
    dx, dy = DIRECTIONS[direction]
    lo = size + FRAME_MARGIN
    x_lo, x_hi = lo - min(dx, 0) * travel, width - 1 - lo - max(dx, 0) * travel
    y_lo, y_hi = lo - min(dy, 0) * travel, height - 1 - lo - max(dy, 0) * travel
    if x_hi < x_lo or y_hi < y_lo:
        raise ValueError(f"a {frames}x{height}x{width} clip is too small for the shapes of this world")
    return ClipSpec(
        colour=colour,
        shape=shape,
        direction=direction,
        caption=caption_for(colour, shape, direction, rng, paraphrase),
        size=size,
        speed=speed,
        x0=float(rng.uniform(x_lo, x_hi)),
        y0=float(rng.uniform(y_lo, y_hi)),
        background_seed=int(rng.integers(2**31)),
        brightness=float(rng.uniform(0.35, 0.6)),
        frames=frames,
        height=height,
        width=width,
    )


def sample_specs(
    n: int,
    seed: int,
    split: str = "train",
    frames: int = 8,
    height: int = 32,
    width: int = 32,
    paraphrase: bool = False,
) -> list[ClipSpec]:
    """`n` specs with compositions drawn uniformly from a split: "train" (66 compositions) or "heldout" (6)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    pool = TRAIN_COMPOSITIONS if split == "train" else HELD_OUT
    rng = np.random.default_rng(seed)
    picks = rng.integers(len(pool), size=n)
    return [sample_spec(rng, pool[i], frames, height, width, paraphrase) for i in picks]


def _background(spec: ClipSpec) -> np.ndarray:
    """A static, smooth, nearly grey texture (H, W, 3): bilinear-upsampled value noise plus faint stripes."""
    rng = np.random.default_rng(spec.background_seed)
    h, w = spec.height, spec.width
    coarse = rng.normal(0.0, 1.0, size=(5, 5))
    ys, xs = np.linspace(0, 4, h), np.linspace(0, 4, w)
    y0, x0 = np.floor(ys).astype(int).clip(0, 3), np.floor(xs).astype(int).clip(0, 3)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    smooth = (
        coarse[y0][:, x0] * (1 - fy) * (1 - fx)
        + coarse[y0 + 1][:, x0] * fy * (1 - fx)
        + coarse[y0][:, x0 + 1] * (1 - fy) * fx
        + coarse[y0 + 1][:, x0 + 1] * fy * fx
    )
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.3, 0.8)
    yy, xx = np.mgrid[0:h, 0:w]
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    grey = spec.brightness + 0.07 * smooth + 0.03 * stripes
    tint = rng.uniform(-0.02, 0.02, size=3)
    return np.clip(grey[..., None] + tint, 0.0, 1.0)


def _coverage(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Boolean inside-test of `shape` centred at (cx, cy) with half-extent r, on sample points (xx, yy)."""
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r) & (np.abs(dy) <= r)
    if shape == "triangle":  # apex up, base down: |dx| shrinks linearly from r at the base to 0 at the apex
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= r * (dy + r) / (2 * r))
    raise ValueError(f"unknown shape {shape!r}; choose from {SHAPES}")


def render(spec: ClipSpec, supersample: int = 4) -> np.ndarray:
    """Render a clip as uint8 (T, H, W, 3), anti-aliased by supersampling each pixel."""
    t, h, w, s = spec.frames, spec.height, spec.width, supersample
    offsets = (np.arange(s) + 0.5) / s - 0.5
    yy = (np.arange(h)[:, None] + offsets[None, :]).reshape(-1)  # (H*s,)
    xx = (np.arange(w)[:, None] + offsets[None, :]).reshape(-1)
    yy, xx = np.meshgrid(yy, xx, indexing="ij")  # (H*s, W*s)
    background = _background(spec)
    colour = np.asarray(COLOURS[spec.colour])
    dx, dy = DIRECTIONS[spec.direction]
    clip = np.empty((t, h, w, 3), dtype=np.float64)
    for i in range(t):
        cx, cy = spec.x0 + dx * spec.speed * i, spec.y0 + dy * spec.speed * i
        inside = _coverage(spec.shape, xx, yy, cx, cy, spec.size)
        alpha = inside.reshape(h, s, w, s).mean(axis=(1, 3))[..., None]  # (H, W, 1)
        clip[i] = alpha * colour + (1 - alpha) * background
    return np.round(clip * 255).astype(np.uint8)


def render_batch(specs: list[ClipSpec]) -> np.ndarray:
    """Render many clips of one shape as uint8 (B, T, H, W, 3)."""
    return np.stack([render(s) for s in specs])
