"""Perceptual metrics of video: distances between feature distributions, and temporal consistency (after VBench).

PSNR and SSIM compare a clip with one target pixel by pixel; a generator is judged instead by whether its clips
look like real ones, as a distribution. Two feature spaces:
- frames: a pretrained image network (efficientnet-lite0, ImageNet), one vector per frame, frames upsampled to
  224x224. It sees appearance, not motion: shuffling a clip's frames leaves its set of frame features unchanged.
- videos (FVD-vidgen): `VideoFeatureNet`, a small 3D conv net trained here on clips of the built-in world to tell
  colour, shape, direction and speed; its penultimate layer sees motion.
In either space, FD is the Fréchet distance between Gaussians fitted to the two sets, and KID the unbiased squared
MMD with the cubic polynomial kernel (unbiased at any sample size, where FD is biased upwards at small ones).

The networks are handed in already loaded (`vidgen.runs.feature_nets` verifies and loads their weights).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidgen.diffusion import clips_to_tensor
from vidgen.metrics import temporal_consistency

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FRAME_SIZE = 224  # the resolution efficientnet-lite0 was trained at


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D):
    |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)). The trace of the square root is computed from the
    eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is symmetric, so it stays real where D exceeds N."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N, D) feature sets of the same D with N >= 2, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    if min(len(a), len(b)) < a.shape[1]:  # fewer samples than features: the same number from N x M matrices
        return _frechet_distance_few(a - mu_a, b - mu_b, ((mu_a - mu_b) ** 2).sum())
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(cov_a)
    root_a = (vecs * np.sqrt(vals.clip(min=0))) @ vecs.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a).clip(min=0)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(cross).sum())


def _frechet_distance_few(a: np.ndarray, b: np.ndarray, mean_term: float) -> float:
    """`frechet_distance` of centred feature sets a (N, D), b (M, D) with N or M below D, without a D x D matrix:
    with S_a = a^T a / (N-1) and S_b = b^T b / (M-1), Tr((S_a S_b)^(1/2)) is the sum of the singular values of
    a b^T / sqrt((N-1)(M-1)) (a D=1280 eigendecomposition took seconds; this takes a millisecond)."""
    cross = np.linalg.svd(a @ b.T / np.sqrt((len(a) - 1) * (len(b) - 1)), compute_uv=False).sum()
    return float(mean_term + (a * a).sum() / (len(a) - 1) + (b * b).sum() / (len(b) - 1) - 2 * cross)


def kernel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """KID: the unbiased estimate of squared MMD between feature sets a (N, D) and b (M, D) under the kernel
    k(x, y) = (x.y / D + 1)^3 (Binkowski et al. 2018). Near zero (either sign) for samples of one distribution."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N, D) feature sets of the same D with N >= 2, got {a.shape} and {b.shape}")
    d, n, m = a.shape[1], len(a), len(b)
    k_aa, k_bb, k_ab = (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
    within_a = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(within_a + within_b - 2 * k_ab.mean())


def subject_consistency(frame_features: np.ndarray) -> float:
    """VBench's subject consistency of one clip from its frame features (T, D): the mean, over frames after the
    first, of the cosine similarity to the previous frame and to the first, averaged. 1 for a still clip."""
    f = np.asarray(frame_features, np.float64)
    if len(f) < 2:
        return 1.0
    f = f / np.linalg.norm(f, axis=1, keepdims=True).clip(min=1e-12)
    to_previous = (f[1:] * f[:-1]).sum(axis=1)
    to_first = f[1:] @ f[0]
    return float(((to_previous + to_first) / 2).mean())


@torch.inference_mode()
def frame_features(network: nn.Module, clips, batch_size: int = 32) -> np.ndarray:
    """Per-frame features (B, T, D) of uint8 clips (B, T, H, W, 3) from an image network with `extract_features`
    (efficientnet's (N, D, 7, 7) feature map, mean-pooled), frames resized to 224x224 and ImageNet-normalised."""
    clips = np.asarray(clips)
    b, t = clips.shape[:2]
    frames = torch.as_tensor(clips.reshape(b * t, *clips.shape[2:])).permute(0, 3, 1, 2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(frames), batch_size):
        x = frames[i:i + batch_size].float() / 255.0
        x = F.interpolate(x, size=(FRAME_SIZE, FRAME_SIZE), mode="bilinear", align_corners=False)
        out.append(network.extract_features((x - mean) / std).mean(dim=(2, 3)))
    return torch.cat(out).reshape(b, t, -1).numpy()


class VideoFeatureNet(nn.Module):
    """A small 3D conv net over whole clips (3, T, H, W) -> a feature vector, trained to read the built-in world's
    colour, shape, direction and speed; the features (penultimate layer) are FVD-vidgen's space. Convolutions mix
    neighbouring frames at every stage, so the features depend on frame order."""

    COLOURS, SHAPES, DIRECTIONS = 6, 3, 4

    def __init__(self, width: int = 32, feature_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv3d(3, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv3d(w, 2 * w, 3, stride=(1, 2, 2), padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv3d(2 * w, 2 * w, 3, stride=(2, 2, 2), padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv3d(2 * w, 4 * w, 3, stride=(2, 2, 2), padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
        )
        self.project = nn.Sequential(nn.Linear(4 * w, feature_dim), nn.SiLU())
        self.heads = nn.Linear(feature_dim, self.COLOURS + self.SHAPES + self.DIRECTIONS + 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> (B, feature_dim)."""
        return self.project(self.body(x).mean(dim=(2, 3, 4)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of colour (B, 6), shape (B, 3), direction (B, 4), and speed in pixels per frame (B,)."""
        out = self.heads(self.features(x))
        c, s, d = self.COLOURS, self.SHAPES, self.DIRECTIONS
        return {"colour": out[:, :c], "shape": out[:, c:c + s], "direction": out[:, c + s:c + s + d],
                "speed": out[:, -1]}


@torch.inference_mode()
def video_features(network: VideoFeatureNet, clips, batch_size: int = 64) -> np.ndarray:
    """FVD-vidgen features (B, D) of uint8 clips (B, T, H, W, 3)."""
    x = clips_to_tensor(clips)
    return torch.cat([network.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).numpy()


def feature_distances(frames: np.ndarray, reference_frames: np.ndarray, video: np.ndarray,
                      reference_video: np.ndarray) -> dict[str, float]:
    """FD and KID between two sets' frame features (B, T, D) and between their video features (B, D)."""
    flat, flat_ref = frames.reshape(-1, frames.shape[-1]), reference_frames.reshape(-1, reference_frames.shape[-1])
    return {"fd_frames": frechet_distance(flat, flat_ref), "kid_frames": kernel_distance(flat, flat_ref),
            "fvd_vidgen": frechet_distance(video, reference_video),
            "kvd_vidgen": kernel_distance(video, reference_video)}


def perceptual_report(generated, reference, frame_network: nn.Module, video_network: VideoFeatureNet) -> dict:
    """FD and KID of frame features and of FVD-vidgen features between generated and reference clips (uint8
    (B, T, H, W, 3), the same prompts), with the subject consistency and flicker score of both sets."""
    gen_frames, ref_frames = frame_features(frame_network, generated), frame_features(frame_network, reference)
    gen_video, ref_video = video_features(video_network, generated), video_features(video_network, reference)
    return {
        **feature_distances(gen_frames, ref_frames, gen_video, ref_video),
        "subject_consistency": float(np.mean([subject_consistency(f) for f in gen_frames])),
        "subject_consistency_reference": float(np.mean([subject_consistency(f) for f in ref_frames])),
        "flicker": float(np.mean([temporal_consistency(c) for c in np.asarray(generated)])),
        "flicker_reference": float(np.mean([temporal_consistency(c) for c in np.asarray(reference)])),
        "clips": len(generated),
    }
