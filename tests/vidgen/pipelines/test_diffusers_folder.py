"""The diffusers backend on tiny random-weight Wan, LTX-Video and CogVideoX folders: what each declares it makes,
clips that depend on their seed alone, prompt limits, and folders refused before anything loads."""

import json
import shutil

import numpy as np
import pytest

from storage.package import ModelFileError, write_sums
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.load import describe_model, load_pipeline
from vidgen.precision import dtype_name

# what each pipeline class checks: Wan 16-pixel multiples (VAE 8 x patch 2), LTX 32 (its check_inputs), CogVideoX 16
MULTIPLES = {"wan": 16, "ltx": 32, "cogvideox": 16}
CLASSES = {"wan": "WanPipeline", "ltx": "LTXPipeline", "cogvideox": "CogVideoXPipeline"}


@pytest.fixture(scope="module")
def loaded(tiny_pipelines):
    return {kind: load_pipeline(folder) for kind, folder in tiny_pipelines.items()}


def clips(pipeline, *requests, **defaults):
    caps = pipeline.capabilities.with_defaults(**{"steps": 2, "frames": 9, "height": 32, "width": 32, **defaults})
    resolved = [resolve_clip(r, caps) for r in requests]
    assert all(not problems for _, problems in resolved), resolved
    return [clip for clip, _ in resolved]


@pytest.mark.parametrize("kind", ["wan", "ltx", "cogvideox"])
def test_capabilities_come_from_the_pipeline_and_planning_loads_no_weights(kind, tiny_pipelines, loaded):
    pipeline = loaded[kind]
    caps = pipeline.capabilities
    assert pipeline.backend == "diffusers" and pipeline.pipeline_class == CLASSES[kind]
    assert (caps.frames.multiple, caps.frames.remainder) == (4, 1)  # 4k+1 frames: the VAE compresses time 4x
    assert caps.height.multiple == caps.width.multiple == MULTIPLES[kind]
    auto = dtype_name("auto", "cpu")  # float32, or bfloat16 on CPUs with bf16 matmuls
    assert caps.negative_prompt and caps.dtype == auto and caps.device == "cpu"
    planned = describe_model(tiny_pipelines[kind])  # built on the meta device: nothing loaded
    assert planned.capabilities == caps and planned.label == pipeline.label
    assert planned.pipeline_class == CLASSES[kind] and planned.label.startswith(f"tiny-{kind}#")
    clip, problems = resolve_clip(ClipRequest(prompt="a cat", frames=8, height=40), caps)
    assert clip is None and {p.field for p in problems} == {"frames", "height"}
    assert "4k+1" in problems[0].reason and "e.g. 9" in problems[0].reason


@pytest.mark.parametrize("kind", ["wan", "ltx", "cogvideox"])
def test_a_clip_depends_on_its_seed_not_on_its_batch(kind, loaded):
    pipeline = loaded[kind]
    batch = clips(pipeline, ClipRequest(prompt="a red square", seed=1),
                  ClipRequest(prompt="a dog at night", seed=2, negative_prompt="blurry"),
                  ClipRequest(prompt="a cat", seed=3))
    together = pipeline.generate(batch).frames
    assert together.shape == (3, 9, 32, 32, 3) and together.dtype == np.uint8
    alone = pipeline.generate(batch[1:2]).frames[0]
    # batched matmuls may round differently: at most one grey level apart
    assert np.abs(alone.astype(int) - together[1].astype(int)).max() <= 1
    assert np.array_equal(pipeline.generate(batch[1:2]).frames[0], alone)  # and exactly repeatable
    assert np.abs(together[0].astype(int) - together[2].astype(int)).mean() > 1  # other seeds, other clips


def test_other_sizes_and_prompts_it_cannot_read_whole(loaded):
    wan, cog = loaded["wan"], loaded["cogvideox"]
    (wide,) = clips(wan, ClipRequest(prompt="a city", frames=5, height=16, width=48))
    assert wan.generate([wide]).frames.shape == (1, 5, 16, 48, 3)
    encoded, refused = cog.encode(["a cat", "a " * 30])  # CogVideoX reads a fixed 16 tokens (this tiny one)
    assert encoded == ["a cat"] and "at most 16" in refused[1]


def test_a_folder_missing_a_component_is_one_line_naming_it(tiny_pipelines, tmp_path):
    broken = shutil.copytree(tiny_pipelines["wan"], tmp_path / "wan")
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelFileError, match=r"has no vae/ folder, the AutoencoderKLWan component"):
        describe_model(broken)
    with pytest.raises(ModelFileError, match="has no vae/ folder"):
        load_pipeline(broken)


def test_pickled_weights_are_refused_with_how_to_convert(tiny_pipelines, tmp_path):
    folder = shutil.copytree(tiny_pipelines["ltx"], tmp_path / "ltx")
    (folder / "vae" / "diffusion_pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelFileError, match=r"diffusion_pytorch_model.bin holds pickled weights.*safe_serialization"):
        load_pipeline(folder)


def test_a_packaged_folder_refuses_a_tampered_or_added_file_by_name(tiny_pipelines, tmp_path):
    folder = shutil.copytree(tiny_pipelines["cogvideox"], tmp_path / "cog")
    sums = write_sums(folder)
    assert "transformer/config.json" in sums and "model_index.json" in sums
    assert describe_model(folder).label.startswith("cog#")
    (folder / "extra.txt").write_text("added later")
    with pytest.raises(ModelFileError, match="extra.txt is not listed in SHA256SUMS"):
        load_pipeline(folder)
    (folder / "extra.txt").unlink()
    config = folder / "transformer" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_layers": 2}))
    with pytest.raises(ModelFileError, match=r"transformer/config.json does not match its SHA256SUMS"):
        load_pipeline(folder)


def test_generate_and_eval_commands_take_a_pipeline_folder(tiny_pipelines, tmp_path):
    from typer.testing import CliRunner

    from storage.video import decode
    from vidgen.cli import app

    runner = CliRunner()
    size = ["--frames", "9", "--height", "32", "--width", "32", "--steps", "2"]
    out = tmp_path / "ltx.mp4"
    result = runner.invoke(app, ["generate", "a cat", "--model", str(tiny_pipelines["ltx"]), "--negative-prompt",
                                 "blurry", "--out", str(out), *size])
    assert result.exit_code == 0, result.output
    assert "tiny-ltx#" in result.output and "detector reads" not in result.output  # not the built-in world
    assert decode(out.read_bytes()).shape == (9, 32, 32, 3)
    refused = runner.invoke(app, ["generate", "a cat", "--model", str(tiny_pipelines["ltx"]), "--out", str(out),
                                  "--frames", "8", "--height", "32", "--width", "32"])
    assert refused.exit_code == 1 and "frames=8 cannot be made" in refused.output
    evaluated = runner.invoke(app, ["eval", "--model", str(tiny_pipelines["wan"]), "--clips", "4", "--json", *size])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.output)
    assert report["backend"] == "diffusers" and report["pipeline_class"] == "WanPipeline"
    assert report["clip_shape"] == [9, 32, 32] and report["seconds_per_clip"] > 0 and "seen" not in report
