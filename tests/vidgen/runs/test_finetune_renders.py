"""Validation renders in-process on the tiny Wan: a checkpoint's LoRA weights go into the loaded pipeline, a prompt
the model cannot read is left out by name, and an adapter at its initial (zero) update renders the base's frames."""

import numpy as np

from jobs._finetune_worker import load_trainable
from storage.video import decode
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions
from vidgen.runs.finetune_lora import LoraSettings, add_lora
from vidgen.runs.finetune_recipes import recipe_for
from vidgen.runs.finetune_renders import ValidationPlan, render_checkpoints


def test_each_checkpoint_renders_the_readable_prompts_and_a_zero_update_renders_the_base(tiny_pipelines, tmp_path):
    from diffusers import WanTransformer3DModel

    settings = LoraSettings(rank=2)
    trained = WanTransformer3DModel.from_pretrained(tiny_pipelines["wan"] / "transformer")
    add_lora(trained, recipe_for("WanPipeline"), settings)  # its update starts at zero
    weights = {name: p.detach().clone() for name, p in trained.named_parameters() if p.requires_grad}
    pipeline = load_pipeline(str(tiny_pipelines["wan"]), options=PipelineOptions(dtype="float32"))
    long = " ".join(["red"] * 600)  # more tokens than Wan reads (512)
    plan = ValidationPlan(["a red square moving left", long], [3, 4], (5, 32, 32), steps=2)
    clip, _ = resolve_clip(ClipRequest(prompt="a red square moving left", seed=4, frames=5, height=32, width=32,
                                       steps=2), pipeline.capabilities)
    expected = pipeline.generate([clip]).frames[0].astype(np.float32)  # the base, before any adapter
    records = render_checkpoints(pipeline, settings, [(2, weights), (4, weights)], plan, tmp_path, load_trainable)
    assert [(r["step"], r["seed"]) for r in records] == [(2, 3), (2, 4), (4, 3), (4, 4)]
    assert {r["prompt"] for r in records} == {"a red square moving left"}
    assert (tmp_path / "preview.png").stat().st_size > 0
    rendered = decode((tmp_path / "step00000004" / "p0-s4.mp4").read_bytes()).astype(np.float32)
    assert np.abs(rendered - expected).mean() < 4  # the same clip, through the MP4 codec


def test_a_bf16_pipeline_keeps_the_modules_diffusers_keeps_in_float32(tiny_pipelines, tmp_path, recwarn):
    """Checkpoint weights are copied into the loaded dtypes: casting the whole transformer to bf16 would also cast
    the norms and embeddings diffusers keeps in float32 (and warn so)."""
    import torch
    from diffusers import WanTransformer3DModel

    settings = LoraSettings(rank=2)
    trained = WanTransformer3DModel.from_pretrained(tiny_pipelines["wan"] / "transformer")
    add_lora(trained, recipe_for("WanPipeline"), settings)
    weights = {name: p.detach().clone() for name, p in trained.named_parameters() if p.requires_grad}
    pipeline = load_pipeline(str(tiny_pipelines["wan"]), options=PipelineOptions(dtype="bfloat16"))
    transformer = pipeline.pipe.transformer
    kept = {name: p.dtype for name, p in transformer.named_parameters() if p.dtype == torch.float32}
    assert kept  # diffusers keeps Wan's norms and time embedder in float32 under torch_dtype=bf16
    render_checkpoints(pipeline, settings, [(1, weights)], ValidationPlan(["a red square"], [0], (5, 32, 32), steps=1),
                       tmp_path, load_trainable)
    assert all(dict(transformer.named_parameters())[name].dtype == torch.float32 for name in kept)
    assert not [w for w in recwarn if "should be kept in float32" in str(w.message)]
