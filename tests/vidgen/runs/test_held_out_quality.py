"""The gate's measures for diffusers models on held-out footage, on the tiny Wan: an adapter trained on footage like
the held-out clips lowers their validation loss (the loss repeats exactly: tests/vidgen/runs/test_finetune.py)."""

import numpy as np
import pytest
import torch

from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions
from vidgen.runs.feature_nets import efficientnet_lite0
from vidgen.runs.finetune_lora import LoraSettings, add_lora
from vidgen.runs.finetune_objective import objective_of, training_loss
from vidgen.runs.finetune_precompute import Clip
from vidgen.runs.finetune_recipes import encode_clips, encode_text, recipe_for
from vidgen.runs.held_out_quality import held_out_quality


def _footage(seed: int) -> list[Clip]:
    """Clips of a still colour gradient, each a little shifted: footage with one look."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, 32, dtype=np.float32)
    clips = []
    for i in range(3):
        frame = np.stack([np.add.outer(ramp, ramp) / 2, np.full((32, 32), 40.0 * i),
                          np.add.outer(ramp, -ramp) / 2 + 128], axis=-1)
        video = np.repeat(frame[None], 5, axis=0) + rng.normal(0, 4, (5, 32, 32, 3))
        clips.append(Clip(f"c{i}", f"a red square moving {('left', 'right', 'up')[i]}", "eval",
                          video.clip(0, 255).astype(np.uint8)))
    return clips


@pytest.fixture(scope="module")
def frame_network():
    return efficientnet_lite0()


def test_an_adapter_trained_on_such_footage_lowers_the_validation_loss(tiny_pipelines,
                                                                                               frame_network):
    clips = _footage(0)
    base = load_pipeline(str(tiny_pipelines["wan"]), options=PipelineOptions(dtype="float32"))
    first = held_out_quality(base, clips, frame_network, steps=2)
    assert first["clips"] == 3 and first["clip_shape"] == [5, 32, 32] and first["fd_frames"] > 0
    assert 0 < first["subject_consistency_reference"] <= 1 and first["flicker"] >= 0

    tuned = load_pipeline(str(tiny_pipelines["wan"]), options=PipelineOptions(dtype="float32"))
    transformer = tuned.pipe.transformer
    add_lora(transformer, recipe_for("WanPipeline"), LoraSettings(rank=4))
    train = _footage(1)  # other clips with the same look
    latents = encode_clips(tuned.pipe, torch.from_numpy(np.stack([c.frames for c in train])))
    text = encode_text(tuned.pipe, [c.caption for c in train])
    objective = objective_of(tuned.pipe)
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(15):
        training_loss(objective, transformer, latents, text, generator).backward()
        optimizer.step()
        optimizer.zero_grad()
    transformer.eval()
    after = held_out_quality(tuned, clips, frame_network, steps=2)
    assert after["val_loss"] < 0.9 * first["val_loss"]


def test_too_few_held_out_clips_or_an_unreadable_caption_is_refused_by_name(tiny_pipelines, frame_network):
    base = load_pipeline(str(tiny_pipelines["wan"]), options=PipelineOptions(dtype="float32"))
    clips = _footage(0)
    with pytest.raises(ValueError, match="at least 2 held-out clips"):
        held_out_quality(base, clips[:1], frame_network)
    long = Clip("long", " ".join(["red"] * 600), "eval", clips[0].frames)
    with pytest.raises(ValueError, match="held-out caption .* cannot be read"):
        held_out_quality(base, [long, *clips], frame_network)
