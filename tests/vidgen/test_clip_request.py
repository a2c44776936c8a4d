"""One clip request: its bounds hold for manifest rows and HTTP bodies alike, and resolving it fills the model's
defaults or names every field the model cannot honour."""

import pytest

from cluster.api import VideoRequest
from vidgen.clip_request import Capabilities, ClipRequest, resolve_clip
from vidgen.diffusion import SamplerConfig
from vidgen.manifest import ManifestRow

CAPS = Capabilities(frames=8, height=32, width=32, steps=24, guidance=3.0)


def test_defaults_come_from_the_model_then_the_run():
    clip, problems = resolve_clip(ClipRequest(prompt="  a red square moving up  "), CAPS, default_seed=7)
    assert problems == [] and clip.prompt == "a red square moving up"
    assert (clip.seed, clip.frames, clip.height, clip.width, clip.steps, clip.guidance) == (7, 8, 32, 32, 24, 3.0)
    run = CAPS.with_defaults(steps=8)
    clip, _ = resolve_clip(ClipRequest(prompt="x", seed=3, guidance=5.0), run)
    assert (clip.seed, clip.steps, clip.guidance) == (3, 8, 5.0)  # the request wins, then the run, then the model


def test_every_field_the_model_cannot_make_is_named():
    clip, problems = resolve_clip(ClipRequest(prompt="x", frames=16, width=64, negative_prompt="blur"), CAPS)
    assert clip is None
    assert [p.field for p in problems] == ["frames", "width", "negative_prompt"]
    assert "frames=16 cannot be made by this model, which makes 8x32x32 clips" in problems[0].reason
    assert resolve_clip(ClipRequest(prompt="x", frames=8, height=32), CAPS)[1] == []  # the native shape is fine


@pytest.mark.parametrize("cls, extra", [(ClipRequest, {}), (ManifestRow, {"id": "a"}), (VideoRequest, {})])
@pytest.mark.parametrize("field, value", [("steps", 0), ("steps", 1001), ("guidance", 0.5), ("guidance", 21.0),
                                          ("seed", -1), ("seed", 2**63), ("prompt", ""), ("prompt", "x" * 1001),
                                          ("frames", 0), ("colour", "red")])
def test_one_set_of_bounds_for_every_kind_of_request(cls, extra, field, value):
    with pytest.raises(ValueError, match=field):
        cls.model_validate({"prompt": "a red square", **extra, field: value})


def test_the_sampler_config_shares_the_bounds():
    with pytest.raises(ValueError, match="steps"):
        SamplerConfig(steps=1001)
    assert SamplerConfig(steps=1000, guidance=20.0).steps == 1000
