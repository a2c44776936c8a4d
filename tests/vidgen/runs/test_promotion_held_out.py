"""The promotion gate judges diffusers models and LoRA adapters on held-out footage (issue 25, item 8): tiny-wan@v1
(a tiny random-weight Wan imported as `vidgen models import` does), v2 an adapter trained on the train split of
footage synthesized by examples/test_videos.py and ingested, v3 an adapter made worse on purpose (large random
weights); the gate measures each on the same clips of the footage's eval split, at the same noise and seeds.
`vidgen eval --lora --data` gives the numbers the gate recorded. All in one process: the footage is ingested file by
file with the real ingest code but without Ray Data's fan-out (tests/jobs/test_ingest.py tests that)."""

import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from examples.test_videos import synthesize
from jobs.ingest import IngestConfig, _ingest_file, card, eval_sources, govern
from storage.aliases import current, history
from storage.captions import CaptionRow
from storage.datasets import finish_dataset
from storage.objectstore import ObjectStore
from storage.package import verify_folder
from storage.registry import push
from vidgen.cli import app
from vidgen.cli._common import GATE_REFUSED_STATUS
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.model_import import import_diffusers_folder
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.references import model_digest, verify_model
from vidgen.runs.finetune_lora import LoraSettings, add_lora
from vidgen.runs.finetune_objective import objective_of, training_loss
from vidgen.runs.finetune_package import write_adapter_package
from vidgen.runs.finetune_recipes import encode_clips, encode_text, recipe_for
from vidgen.runs.memorization import training_clips
from vidgen.runs.promotion import EvalClip, EvaluationFailed, Gate, GateRefused, promote, rollback

CLIPS, STEPS, FRAMES = 3, 2, 5  # held-out clips, sampler steps, frames (4k+1): a version's evaluation takes seconds
CLIP = EvalClip(frames=FRAMES, steps=STEPS)
STEADY = Gate(slowdown=100.0)  # tiny models render in milliseconds: a busy machine's timing must not decide


# four sources of footage, each 2 s at 8 fps: 3 clips of 5 frames a source, one look a source
SOURCES = {"testsrc.mp4": "testsrc2", "life.mp4": "life=seed=1", "cells.mp4": "cellauto=seed=9:rule=30",
           "mandelbrot.mp4": "mandelbrot"}


def _ingest_in_process(src, out) -> str:
    """`jobs.ingest.ingest` of SOURCES without Ray: each file through the same per-file code, then the same
    governance (dedupe, split by source, shards) and card."""
    src.mkdir()
    for name, source in SOURCES.items():
        synthesize(src / name, source, "64x64", "8", 2, ["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    cfg = IngestConfig(src=str(src), captions="-", out=str(out), frames=FRAMES, height=32, width=32,
                       eval_fraction=0.5, seed=2)  # seed 2: life and testsrc held out, cells and mandelbrot train
    rows = {p: CaptionRow(i + 2, p, f"footage of {s.partition('=')[0]}", "cc0-1.0", p)
            for i, (p, s) in enumerate(SOURCES.items())}
    results = (_ingest_file({"path": p, "uri": str(src / p)}, cfg.model_dump(mode="json")) for p in SOURCES)
    evals = eval_sources(set(SOURCES), cfg.eval_fraction, cfg.seed)
    governed = govern(results, rows, cfg, ObjectStore(), [], evals)
    finish_dataset(ObjectStore(), cfg.out, governed.entries,
                   *card(cfg, governed.clips, governed.videos, governed.dropped, [], evals))
    assert sorted(c["split"] for c in governed.clips).count("eval") >= CLIPS
    return str(out)


def _adapter(base_ref: str, data: str, folder, seed: int, train_steps: int, spoil: float = 0.0):
    """An adapter package of the base: trained `train_steps` AdamW steps on the data set's train split, then with
    `spoil` > 0 every adapter weight replaced by seeded noise of that size (a candidate worse on purpose)."""
    base = verify_model(base_ref)
    pipe = load_pipeline(base, options=PipelineOptions(dtype="float32")).pipe
    transformer, recipe, settings = pipe.transformer, recipe_for("WanPipeline"), LoraSettings(rank=4)
    add_lora(transformer, recipe, settings)
    _, captions, clips = training_clips(data)
    latents = encode_clips(pipe, torch.from_numpy(np.ascontiguousarray(clips[:, :FRAMES])))
    text = encode_text(pipe, captions)
    objective, generator = objective_of(pipe), torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(train_steps):
        training_loss(objective, transformer, latents, text, generator).backward()
        optimizer.step()
        optimizer.zero_grad()
    if spoil:
        with torch.no_grad():
            for p in transformer.parameters():
                if p.requires_grad:
                    p.copy_(torch.randn(p.shape, generator=generator) * spoil)
    run = {"validation": [{"step": train_steps, "val_loss": 0.0}], "steps": train_steps, "data": data, "workers": 1,
           "zero_stage": 0, "first_loss": 0.0, "last_loss": 0.0, "history": [{"step": 1, "loss": 0.0}],
           "command": "tests/vidgen/runs/test_promotion_held_out.py", "seed": seed, "data_digest": "-", "run": "t"}
    return write_adapter_package(folder, base, "WanPipeline", transformer, settings, run)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    return _ingest_in_process(tmp_path_factory.mktemp("videos") / "src", tmp_path_factory.mktemp("data") / "footage")


@pytest.fixture(scope="module")
def registry(tiny_pipelines, footage, tmp_path_factory) -> str:
    """tiny-wan: v1 the base, v2 an adapter trained on the footage, v3 an adapter with large random weights."""
    tmp = tmp_path_factory.mktemp("registry-work")
    root = str(tmp / "registry")
    push(import_diffusers_folder(tiny_pipelines["wan"], tmp / "base", licence="apache-2.0"), f"{root}/tiny-wan")
    base = f"file://{root}/tiny-wan@v1"
    push(_adapter(base, footage, tmp / "good", seed=0, train_steps=15), f"{root}/tiny-wan")
    push(_adapter(base, footage, tmp / "bad", seed=1, train_steps=0, spoil=0.5), f"{root}/tiny-wan")
    return root


def test_an_adapter_that_lowers_the_held_out_loss_is_promoted_over_its_base(registry, footage):
    first = promote("tiny-wan", "v1", "production", "the base", root=registry, clips=CLIPS, clip=CLIP,
                    data=footage, gate=STEADY)
    assert first.passed_gate and first.evaluation["baseline"] and "current" not in first.evaluation
    base = first.evaluation["candidate"]["held_out"]
    assert base["clips"] == CLIPS and base["data"] == footage and base["val_loss"] > 0 and base["fd_frames"] > 0

    tuned = promote("tiny-wan", "v2", "production", "fine-tuned", root=registry, clips=CLIPS, clip=CLIP,
                    data=footage, gate=STEADY)
    assert (tuned.version, tuned.previous, tuned.passed_gate) == ("v2", "v1", True)
    found = tuned.evaluation
    assert found["candidate"]["label"].split("+")[1].startswith("tiny-wan@v2#")  # judged as base + adapter
    assert found["current"]["held_out"] == base  # the same clips, noise and seeds measure the same number
    assert found["candidate"]["held_out"]["val_loss"] < 0.95 * base["val_loss"] and not found["problems"]
    assert found["candidate"]["clip_shape"] == found["current"]["clip_shape"] == [FRAMES, 32, 32]


def test_a_worse_adapter_is_refused_by_measure_forced_and_rolled_back(registry, footage):
    promote("tiny-wan", "v2", "staging", "fine-tuned", root=registry, clips=CLIPS, clip=CLIP, data=footage,
            gate=STEADY)
    with pytest.raises(GateRefused) as refused:
        promote("tiny-wan", "v3", "staging", "try it", root=registry, clips=CLIPS, clip=CLIP, data=footage,
                gate=STEADY)
    message = str(refused.value)
    assert message.startswith("tiny-wan@v3 is worse than tiny-wan@staging (v2): held-out validation loss ")
    after, before = map(float, re.search(r"validation loss (\S+) > the current's (\S+) \+ 2%", message).groups())
    assert after > 1.02 * before  # both numbers named
    assert current(f"file://{registry}/tiny-wan", "staging").version == "v2"  # nothing moved

    forced = promote("tiny-wan", "v3", "staging", "on purpose", force=True, root=registry, clips=CLIPS, clip=CLIP,
                     data=footage, gate=STEADY)
    assert forced.version == "v3" and forced.evaluation["forced"] and not forced.passed_gate
    assert all(problem in message for problem in forced.evaluation["problems"])  # the same numbers again
    assert forced.evaluation["candidate"]["held_out"]["val_loss"] > forced.evaluation["current"]["held_out"]["val_loss"]
    back = rollback("tiny-wan", "staging", "v3 is worse", root=registry)
    assert (back.version, back.previous) == ("v2", "v3")


def test_without_data_an_adapter_is_refused_for_want_of_held_out_footage_and_force_records_none_ran(registry):
    runner = CliRunner()
    refused = runner.invoke(app, ["models", "promote", "tiny-wan@v2", "--to", "canary", "--root", registry])
    assert refused.exit_code == GATE_REFUSED_STATUS, refused.output
    assert "no quality measure exists for v2" in refused.output and "--data URI" in refused.output
    forced = runner.invoke(app, ["models", "promote", "tiny-wan@v2", "--to", "canary", "--force", "--root", registry])
    assert forced.exit_code == 0, forced.output
    record = history(f"file://{registry}/tiny-wan", "canary")[-1]
    assert "--data URI" in record.evaluation["candidate"]["none_ran"] and not record.passed_gate


def test_an_evaluation_that_fails_is_one_line(registry, footage):
    with pytest.raises(EvaluationFailed, match=r"^evaluating tiny-wan@v1#\w+ on the held-out clips of .* failed: "
                                               r"ValidationError: steps: "):
        promote("tiny-wan", "v1", "broken", "", root=registry, clips=CLIPS, data=footage,
                clip=EvalClip(frames=FRAMES, steps=0))
    result = CliRunner().invoke(app, ["eval", "--model", "shapes-tiny", "--data", footage, "--clips", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error: --data: held-out measures need a diffusers pipeline" in result.output


def test_eval_with_lora_and_data_gives_the_numbers_the_gate_recorded(registry, footage, tmp_path):
    promote("tiny-wan", "v2", "eval-check", "", root=registry, clips=CLIPS, clip=CLIP, data=footage, gate=STEADY)
    candidate = history(f"file://{registry}/tiny-wan", "eval-check")[-1].evaluation["candidate"]
    recorded = candidate["held_out"]
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "--model", f"file://{registry}/tiny-wan@v1", "--lora",
                                      f"file://{registry}/tiny-wan@v2", "--data", footage, "--clips", str(CLIPS),
                                      "--frames", str(FRAMES), "--steps", str(STEPS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"validation loss {recorded['val_loss']:.4f}" in result.output and "6/6" in result.output
    written = json.loads(out.read_text())
    assert {k: written[k] for k in ("val_loss", "fd_frames", "subject_consistency", "flicker")} == {
        k: recorded[k] for k in ("val_loss", "fd_frames", "subject_consistency", "flicker")}
    assert written["model"] == candidate["label"]


def test_eval_lora_on_a_wrong_base_is_refused_naming_both_digests(registry, tiny_pipelines):
    wrong = verify_folder(tiny_pipelines["ltx"])
    adapter = verify_model(f"file://{registry}/tiny-wan@v2")
    trained_on = json.loads((adapter.folder / "adapter.json").read_text())["base_digest"]
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_pipelines["ltx"]), "--lora",
                                      f"file://{registry}/tiny-wan@v2", "--clips", "1", "--perceptual", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: adapter tiny-wan@v2#") and "was trained on tiny-wan@v1#" in line
    assert trained_on[:12] in line and model_digest(wrong.sums)[:12] in line
