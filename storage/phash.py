"""A perceptual hash of a clip, for near-duplicates that a content hash misses (a re-encode, a rescale, a re-upload).

One DCT hash per sampled frame (the classic pHash: greyscale, 32x32, 2-D DCT, the 8x8 lowest frequencies without
the DC term compared with their median -> 64 bits), over the clip's first, middle and last frames: 192 bits, as 48
hex characters. Two clips are near-duplicates when their hashes differ in at most `NEAR_BITS` bits.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

FRAMES = 3
BITS = 64 * FRAMES
NEAR_BITS = 16  # of 192: ~8%, what a re-encode at another bitrate or size flips (pHash's usual <= 10 of 64)


@functools.cache
def _dct_matrix(n: int = 32) -> np.ndarray:
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


def _frame_bits(frame: np.ndarray) -> np.ndarray:
    grey = np.asarray(Image.fromarray(frame).convert("L").resize((32, 32), Image.Resampling.LANCZOS),
                      dtype=np.float64)
    dct = _dct_matrix() @ grey @ _dct_matrix().T
    low = dct[:8, :8].flatten()[1:]
    return np.concatenate([[low.mean() > np.median(low)], low > np.median(low)])


def clip_phash(clip: np.ndarray) -> str:
    """The 192-bit perceptual hash of a uint8 clip (T, H, W, 3), as hex."""
    picks = np.linspace(0, len(clip) - 1, FRAMES).round().astype(int)
    bits = np.concatenate([_frame_bits(clip[i]) for i in picks])
    return np.packbits(bits.astype(np.uint8)).tobytes().hex()


def hash_array(hashes: list[str]) -> np.ndarray:
    """(N, 24) uint8 of hex hashes, for `hamming` against many at once."""
    return np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(len(hashes), BITS // 8)


def hamming(one: str, many: np.ndarray) -> np.ndarray:
    """Bits in which `one` differs from each row of `many` (from `hash_array`)."""
    return np.bitwise_count(np.bitwise_xor(many, hash_array([one])[0])).sum(axis=1)
