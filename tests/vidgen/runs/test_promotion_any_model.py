"""`vidgen models promote` of the models people bring (issue 29, item 1): an imported diffusers model is refused
with its own exit status and a plain reason, forced it moves without an evaluation that cannot run (recorded as none
ran), the gate evaluates at a clip the model can make (options, or a declared default it can run), an evaluation
that fails is one line, and a vidgen model of one's own videos has no quality measure either."""

import dataclasses
import shutil

import pytest
from typer.testing import CliRunner

from storage.aliases import current, history
from storage.registry import push
from vidgen.cli import app
from vidgen.cli._common import GATE_REFUSED_STATUS
from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.base import ModelInfo
from vidgen.pipelines.load import describe_model, load_pipeline
from vidgen.pipelines.model_import import import_diffusers_folder
from vidgen.pipelines.references import resolve_model
from vidgen.runs.eval_runs import measures_quality


@pytest.fixture
def wan_registry(tiny_pipelines, tmp_path):
    """A registry holding tiny-wan@v1, imported as `vidgen models import` does, and shapes@v1 (the shipped model)."""
    root = tmp_path / "registry"
    push(import_diffusers_folder(tiny_pipelines["wan"], tmp_path / "pkg", licence="apache-2.0"), f"{root}/tiny-wan")
    push(shutil.copytree(resolve_model("shapes-tiny"), tmp_path / "shapes"), f"{root}/shapes")
    return str(root)


def promote(*args: str):
    return CliRunner().invoke(app, ["models", "promote", *args])


def test_a_diffusers_model_is_refused_with_the_gates_own_status_and_a_plain_reason(wan_registry):
    result = promote("tiny-wan@v1", "--to", "production", "--root", wan_registry)
    assert result.exit_code == GATE_REFUSED_STATUS == 3, result.output
    assert "no quality measure exists for v1" in result.output and "Traceback" not in result.output
    assert current(f"file://{wan_registry}/tiny-wan", "production") is None


def test_forcing_a_diffusers_model_records_that_no_evaluation_ran(wan_registry):
    result = promote("tiny-wan@v1", "--to", "production", "--force", "--root", wan_registry)
    assert result.exit_code == 0, result.output
    assert "tiny-wan@production -> v1 (was unset), revision 1 (forced past the gate" in result.output
    record = history(f"file://{wan_registry}/tiny-wan", "production")[-1]
    assert record.evaluation["forced"] and not record.passed_gate
    assert "no quality measure exists" in record.evaluation["candidate"]["none_ran"]


def test_forcing_with_a_clip_the_model_can_make_times_it_and_shows_progress(wan_registry):
    result = promote("tiny-wan@v1", "--to", "production", "--force", "--clips", "2", "--frames", "5", "--height",
                     "16", "--width", "16", "--steps", "1", "--root", wan_registry)
    assert result.exit_code == 0, result.output
    assert "evaluating tiny-wan@v1" in result.output and "2/2" in result.output
    candidate = history(f"file://{wan_registry}/tiny-wan", "production")[-1].evaluation["candidate"]
    assert candidate["clip_shape"] == [5, 16, 16] and candidate["sampler"]["steps"] == 1
    assert candidate["seconds_per_clip"] > 0


def test_an_evaluation_that_cannot_run_is_one_line_and_forced_it_is_recorded(wan_registry):
    refused = promote("shapes@v1", "--to", "staging", "--frames", "9", "--clips", "2", "--root", wan_registry)
    assert refused.exit_code == 1
    assert refused.output.strip().splitlines()[-1].startswith(
        "error: evaluating v1 failed: ValueError: frames: 9 cannot be made by this model")
    assert "--frames/--height/--width/--steps" in refused.output and "Traceback" not in refused.output
    forced = promote("tiny-wan@v1", "--to", "production", "--force", "--frames", "8", "--root", wan_registry)
    assert forced.exit_code == 0, forced.output
    none_ran = history(f"file://{wan_registry}/tiny-wan", "production")[-1].evaluation["candidate"]["none_ran"]
    assert none_ran.startswith("evaluating v1 failed: ValueError: frames: 8 cannot be made")


def test_a_wan_models_declared_sizes_are_ones_its_rotary_table_can_place(tiny_pipelines):
    """The tiny Wan's transformer has rope_max_seq_len=32 positions per axis: 32 patches of 2x2 latents of 8x8
    pixels is 512 pixels, and (32 - 1) * 4 + 1 = 125 frames. Its pipeline's own default (81x480x832) crashed every
    evaluation and render that took the default; the declared maximum and default are now sizes it makes."""
    caps = describe_model(tiny_pipelines["wan"]).capabilities
    assert (caps.width.max, caps.height.max, caps.frames.max) == (512, 512, 125)
    assert caps.shape == (81, 480, 512)
    pipeline = load_pipeline(tiny_pipelines["wan"])
    widest, _ = resolve_clip(ClipRequest(prompt="a cat", frames=1, height=16, width=512, steps=1), caps)
    assert pipeline.generate([widest]).frames.shape == (1, 1, 16, 512, 3)
    with pytest.raises(RuntimeError, match="invalid for input of size"):  # one patch column more: past the table
        pipeline.generate([dataclasses.replace(widest, width=528)])


def test_frame_maximum_is_a_frame_count_the_model_makes(tiny_pipelines):
    """The import card's header said max 1024 while its text said 1 to 1021 (Wan makes 4k+1 frames)."""
    for kind in ("ltx", "cogvideox"):
        frames = describe_model(tiny_pipelines[kind]).capabilities.frames
        assert frames.admits(frames.max) and frames.max == 1021


def test_a_vidgen_model_of_ones_own_videos_has_no_quality_measure(tmp_path):
    def info(datasets: str | None) -> ModelInfo:
        folder = tmp_path / str(len(list(tmp_path.iterdir())))
        folder.mkdir()
        header = f"datasets: [{datasets}]\n" if datasets else ""
        (folder / "card.md").write_text(f"---\nlibrary_name: vidgen\n{header}---\n# a model\n")
        return ModelInfo(folder, "vidgen", "VidgenPipeline", "m", describe_model("shapes-tiny").capabilities)

    assert measures_quality(info("vidgen-builtin-shapes-v1 (generated on the fly)"))
    assert measures_quality(info(None))
    assert not measures_quality(info("s3://bucket/my-videos"))
