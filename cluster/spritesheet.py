"""The `spritesheet` content variant of a video: frames of the clip, evenly spaced, in a grid on one JPEG.

The layout is a pure function of the clip's shape (`sprite_layout`), so a client (or the router, for its header)
knows where each tile is from the video object's `size` and `seconds` alone: up to `MAX_TILES` frames, first and last
included, `COLUMNS` to a row, left to right then top to bottom, each scaled down (never up) so its longer side is at
most `MAX_TILE_SIDE`; slots past the last frame are black. The sheet is made where the thumbnail is, by the replica
that rendered the frames (`cluster.tier_replica.clip_outputs`), and stored beside the MP4.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

# 16 tiles of at most 256 px: a 4x4 grid of at most 1024x1024 px, about 100-200 KB as JPEG for a 480x832 clip
MAX_TILES, COLUMNS, MAX_TILE_SIDE = 16, 4, 256
JPEG_QUALITY = 85  # the thumbnail's 90 is for one frame looked at closely; tiles are looked at together


@dataclass(frozen=True)
class SpriteLayout:
    """Which frames a sheet shows and how they sit: `frames[i]` is tile i, at column i % columns, row i // columns."""

    frames: tuple[int, ...]
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole sheet in pixels."""
        return self.columns * self.tile_width, self.rows * self.tile_height

    def header(self) -> str:
        """The X-Vidgen-Spritesheet header value: "COLUMNSxROWS tiles of WxH, frames I,J,..."."""
        return (f"{self.columns}x{self.rows} tiles of {self.tile_width}x{self.tile_height}, frames "
                f"{','.join(map(str, self.frames))}")


def sprite_layout(frames: int, height: int, width: int) -> SpriteLayout:
    """The layout of the sheet of a clip of `frames` frames of `height` x `width` pixels."""
    count = min(frames, MAX_TILES)
    chosen = tuple(int(i) for i in np.linspace(0, frames - 1, count).round())
    scale = min(1.0, MAX_TILE_SIDE / max(height, width))
    columns = min(count, COLUMNS)
    return SpriteLayout(chosen, columns, math.ceil(count / columns), max(1, round(width * scale)),
                        max(1, round(height * scale)))


def spritesheet(clip: np.ndarray) -> bytes:
    """The JPEG sheet of a uint8 clip (T, H, W, 3), laid out by `sprite_layout`."""
    from PIL import Image

    layout = sprite_layout(*clip.shape[:3])
    sheet = Image.new("RGB", layout.size)
    for i, frame in enumerate(layout.frames):
        tile = Image.fromarray(clip[frame]).resize((layout.tile_width, layout.tile_height), Image.Resampling.BOX)
        sheet.paste(tile, ((i % layout.columns) * layout.tile_width, (i // layout.columns) * layout.tile_height))
    buffer = io.BytesIO()
    sheet.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()
