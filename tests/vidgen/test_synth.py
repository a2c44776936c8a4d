import numpy as np
import pytest

from vidgen import synth


def test_clips_are_seeded_and_deterministic():
    a = synth.render_batch(synth.sample_specs(4, seed=7))
    b = synth.render_batch(synth.sample_specs(4, seed=7))
    c = synth.render_batch(synth.sample_specs(4, seed=8))
    assert a.shape == (4, 8, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_world_has_all_factors_and_holds_compositions_out():
    assert len(synth.COLOURS) == 6 and len(synth.SHAPES) == 3 and len(synth.DIRECTIONS) == 4
    assert len(synth.COMPOSITIONS) == 72
    assert set(synth.HELD_OUT).isdisjoint(synth.TRAIN_COMPOSITIONS)
    assert len(synth.TRAIN_COMPOSITIONS) == 72 - len(synth.HELD_OUT)
    # every single attribute value is still seen in training
    for i, values in enumerate((synth.COLOURS, synth.SHAPES, synth.DIRECTIONS)):
        assert {c[i] for c in synth.TRAIN_COMPOSITIONS} == set(values)
    train = synth.sample_specs(500, seed=1, split="train")
    assert not {s.composition for s in train} & set(synth.HELD_OUT)
    held = synth.sample_specs(50, seed=1, split="heldout")
    assert {s.composition for s in held} <= set(synth.HELD_OUT)


def test_caption_names_its_ground_truth_and_paraphrases_use_other_templates():
    for spec in synth.sample_specs(200, seed=3):
        assert synth.parse_caption(spec.caption) == spec.composition
    paraphrased = synth.sample_specs(50, seed=3, paraphrase=True)
    train_prefixes = {t.split("{")[0] for t in synth.TRAIN_TEMPLATES}
    for spec in paraphrased:
        assert synth.parse_caption(spec.caption) == spec.composition
        assert spec.caption.startswith(("video of", "there is"))
        assert not any(p and spec.caption.startswith(p) for p in train_prefixes if p not in ("",))


def test_shape_stays_inside_the_frame_and_moves_the_right_way():
    for spec in synth.sample_specs(100, seed=5):
        clip = synth.render(spec).astype(float) / 255
        saturated = (clip.max(-1) - clip.min(-1)) > 0.35  # (T, H, W)
        assert not saturated[:, 0, :].any() and not saturated[:, -1, :].any()
        assert not saturated[:, :, 0].any() and not saturated[:, :, -1].any()
        ys, xs = np.nonzero(saturated[0])
        ye, xe = np.nonzero(saturated[-1])
        dx, dy = synth.DIRECTIONS[spec.direction]
        moved = np.array([xe.mean() - xs.mean(), ye.mean() - ys.mean()])
        assert moved @ np.array([dx, dy]) > 4  # pixels along the named direction


def test_bigger_worlds_scale_and_tiny_frames_are_refused():
    spec = synth.sample_specs(1, seed=0, frames=16, height=64, width=64)[0]
    assert synth.render(spec).shape == (16, 64, 64, 3)
    with pytest.raises(ValueError, match="too small"):
        synth.sample_specs(1, seed=0, height=6, width=6)
    with pytest.raises(ValueError, match="split"):
        synth.sample_specs(1, seed=0, split="test")
