import numpy as np
import pytest
import torch

from storage import video
from vidgen import metrics, synth


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_detector_agrees_with_ground_truth_on_rendered_clips(split):
    specs = synth.sample_specs(400, seed=11, split=split)
    acc = metrics.prompt_accuracy([synth.render(s) for s in specs], [s.composition for s in specs])
    assert acc.all_three >= 0.99, acc


def test_detector_survives_the_mp4_codec():
    specs = synth.sample_specs(100, seed=12)
    clips = [video.decode(video.encode(synth.render(s), "mp4")) for s in specs]
    assert metrics.prompt_accuracy(clips, [s.composition for s in specs]).all_three >= 0.97


def test_detector_reads_nothing_from_noise_or_grey():
    grey = np.full((8, 32, 32, 3), 120, dtype=np.uint8)
    assert metrics.detect(grey) == metrics.Detection(None, None, None)
    acc = metrics.prompt_accuracy([grey], [("red", "circle", "left")])
    assert acc.all_three == 0 and acc.n == 1


def test_wrong_prompt_scores_zero_on_that_attribute():
    spec = synth.sample_specs(1, seed=2)[0]
    colour, shape, direction = spec.composition
    other = next(c for c in synth.COLOURS if c != colour)
    acc = metrics.prompt_accuracy([synth.render(spec)], [(other, shape, direction)])
    assert (acc.colour, acc.shape, acc.direction, acc.all_three) == (0.0, 1.0, 1.0, 0.0)


def test_psnr_and_ssim():
    clip = torch.from_numpy(synth.render(synth.sample_specs(1, seed=4)[0])).float() / 255
    noisy = (clip + 0.05 * torch.randn_like(clip)).clamp(0, 1)
    assert metrics.ssim(clip, clip) == pytest.approx(1.0, abs=1e-4)
    assert 20 < metrics.psnr(noisy, clip) < 30  # sigma 0.05 -> ~26 dB
    assert metrics.ssim(noisy, clip) < 0.95
    with pytest.raises(ValueError):
        metrics.psnr(clip[0], clip[0])


def test_temporal_consistency_is_one_for_a_still_clip_and_falls_with_flicker():
    import numpy as np

    from vidgen.metrics import temporal_consistency

    still = np.full((8, 16, 16, 3), 120, dtype=np.uint8)
    rng = np.random.default_rng(0)
    scores = []
    for amount in (0, 20, 60, 120):
        clip = still.astype(int) + rng.integers(-amount, amount + 1, size=still.shape)
        scores.append(temporal_consistency(np.clip(clip, 0, 255).astype(np.uint8)))
    assert scores[0] == 1.0 and all(a > b for a, b in zip(scores, scores[1:], strict=False))
    assert temporal_consistency(still[:1]) == 1.0
