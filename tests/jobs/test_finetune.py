"""`vidgen finetune` end to end on a real local Ray: footage ingested from the example corpus, a tiny random-weight
Wan pipeline, LoRA on 2 DeepSpeed workers, the adapter package loaded in plain diffusers, latents reused by a second
run, a resume on 1 worker of a run started on 2. Variants of the objective and recipes run in-process in
tests/vidgen/runs/test_finetune.py."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from examples.test_videos import make_corpus
from jobs._finetune_worker import _SIGTERM, FinetuneHooks
from jobs.finetune import FinetuneConfig, run_finetune
from jobs.ingest import IngestConfig, ingest
from storage.package import verify_package
from vidgen.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def footage(ray_cluster, tmp_path_factory):
    """The example corpus (synthetic videos only) ingested as 9x32x32 clips, a source in the eval split."""
    src = make_corpus(tmp_path_factory.mktemp("videos") / "src", real=False)
    out = tmp_path_factory.mktemp("data") / "footage"
    ingest(IngestConfig(src=str(src), captions=str(src / "captions.csv"), out=str(out), frames=9, height=32, width=32,
                        eval_fraction=0.3, seed=1))
    return str(out)


@pytest.fixture(scope="module")
def lora_run(ray_cluster, footage, tiny_pipelines, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    cfg = FinetuneConfig(model=str(tiny_pipelines["wan"]), data=footage, runs=str(runs), steps=8, lr=2e-3,
                         warmup_steps=0, workers=2, zero_stage=2, validate_every=4, checkpoint_every=4,
                         lora={"rank": 4}, validation_steps=2, validation_seeds=[0, 1])
    return cfg, run_finetune(cfg)


def _render(pipe, seed: int = 7) -> np.ndarray:
    out = pipe(prompt="a red square moving left", num_frames=5, height=32, width=32, num_inference_steps=2,
               guidance_scale=1.0, generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
    return np.asarray(out.frames)


def test_a_lora_run_on_two_workers_lowers_the_validation_loss_and_leaves_an_adapter(lora_run):
    cfg, summary = lora_run
    assert summary["steps"] == 8 and summary["workers"] == 2
    validation = summary["validation"]
    assert [v["step"] for v in validation] == [0, 4, 8]
    assert validation[-1]["val_loss"] < validation[0]["val_loss"]
    folder = Path(summary["package"])
    assert verify_package(folder)["adapter.json"]
    adapter = json.loads((folder / "adapter.json").read_text())
    assert adapter["pipeline_class"] == "WanPipeline" and adapter["rank"] == 4
    card = (folder / "card.md").read_text()
    assert adapter["base_digest"] in card and "validation loss" in card
    renders = Path(summary["renders"])  # 2 eval captions x 2 seeds, with the weights of steps 4 and 8
    assert sorted(p.relative_to(renders).as_posix() for p in renders.rglob("*.mp4")) == [
        f"step{step:08d}/p{p}-s{seed}.mp4" for step in (4, 8) for p in (0, 1) for seed in (0, 1)]
    assert (renders / "preview.png").stat().st_size > 0
    from storage.video import decode

    assert decode((renders / "step00000008" / "p0-s1.mp4").read_bytes()).shape == (9, 32, 32, 3)


def test_the_adapter_loads_in_plain_diffusers_and_changes_the_output(lora_run, tiny_pipelines):
    from diffusers import DiffusionPipeline

    _, summary = lora_run
    pipe = DiffusionPipeline.from_pretrained(tiny_pipelines["wan"], local_files_only=True)
    before = _render(pipe)
    pipe.load_lora_weights(summary["package"], weight_name="pytorch_lora_weights.safetensors")
    after = _render(pipe)
    assert np.abs(after - before).max() > 1e-3


def test_a_second_run_reuses_the_latents_and_a_run_resumes_on_one_worker(lora_run, footage, tiny_pipelines):
    cfg, first = lora_run
    cache = Path(first["latents"])
    files = sorted(p for p in cache.rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in files]
    result = CliRunner().invoke(app, ["finetune", "--resume", first["run"], "--runs", cfg.runs, "--workers", "1",
                                      "--steps", "10"])
    assert result.exit_code == 0, result.output
    assert f"latents cached in {cache}/" in result.output and "10 steps on 1 workers" in result.output
    assert sorted(p for p in cache.rglob("*") if p.is_file()) == files  # nothing encoded, nothing rewritten
    assert [p.stat().st_mtime_ns for p in files] == stamps
    metrics = (Path(first["package"]) / "metrics.csv").read_text().splitlines()
    assert [int(row.split(",")[0]) for row in metrics[1:]] == list(range(1, 11))  # steps 1-8 kept, 9-10 added
    adapter = json.loads((Path(first["package"]) / "adapter.json").read_text())
    assert adapter["rank"] == 4


def test_render_with_the_adapter_gives_the_frames_diffusers_gives(lora_run, tiny_pipelines):
    from diffusers import DiffusionPipeline

    from vidgen.clip_request import ClipRequest, resolve_clip
    from vidgen.pipelines.load import load_pipeline
    from vidgen.pipelines.options import PipelineOptions

    _, summary = lora_run
    pipe = DiffusionPipeline.from_pretrained(tiny_pipelines["wan"], local_files_only=True)
    pipe.load_lora_weights(summary["package"], weight_name="pytorch_lora_weights.safetensors")
    expected = (_render(pipe) * 255).round()
    ours = load_pipeline(str(tiny_pipelines["wan"]),
                         options=PipelineOptions(dtype="float32", lora=summary["package"]))
    clip, problems = resolve_clip(ClipRequest(prompt="a red square moving left", seed=7, frames=5, height=32,
                                              width=32, steps=2, guidance=1.0), ours.capabilities)
    assert not problems
    frames = ours.generate([clip]).frames[0].astype(np.float32)
    assert np.abs(frames - expected[0]).max() <= 2  # fused weights vs peft's branch: rounding apart


def test_an_adapter_on_another_base_is_refused_naming_both(lora_run, tiny_pipelines):
    from storage.package import ModelFileError
    from vidgen.pipelines.load import load_pipeline
    from vidgen.pipelines.options import PipelineOptions

    _, summary = lora_run
    with pytest.raises(ModelFileError, match=r"adapter .* was trained on tiny-wan#[0-9a-f]{12}, not on tiny-ltx#"):
        load_pipeline(str(tiny_pipelines["ltx"]), options=PipelineOptions(lora=summary["package"]))
    with pytest.raises(ModelFileError, match="is a LoRA adapter, not a model"):
        load_pipeline(summary["package"])


def _copy_to(store, folder: Path, uri: str) -> None:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.write(f"{uri}/{path.relative_to(folder)}", path.read_bytes())


def test_a_full_fine_tune_under_zero3_with_offload_reads_s3_and_leaves_a_pipeline_folder_there(
        ray_cluster, footage, tiny_pipelines, tmp_path, s3_config, bucket):
    from diffusers import DiffusionPipeline

    from storage.objectstore import ObjectStore

    store = ObjectStore(s3_config)
    _copy_to(store, Path(footage), f"{bucket}/footage")
    cfg = FinetuneConfig(model=str(tiny_pipelines["wan"]), data=f"{bucket}/footage", runs=str(tmp_path / "runs"),
                         out=f"{bucket}/tuned", steps=2, method="full", lr=1e-3, workers=2, zero_stage=3,
                         offload_optimizer=True, validate_every=2, checkpoint_every=2, s3=s3_config)
    summary = run_finetune(cfg)
    assert summary["package"] == f"{bucket}/tuned"
    folder = tmp_path / "tuned"
    for obj in store.list(f"{bucket}/tuned"):
        name = obj.uri.removeprefix(f"{bucket}/tuned/")
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(store.read(obj.uri))
    assert verify_package(folder)["transformer/diffusion_pytorch_model.safetensors"]
    tuned = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    base = DiffusionPipeline.from_pretrained(tiny_pipelines["wan"], local_files_only=True)
    changed = [name for name, p in tuned.transformer.named_parameters()
               if not torch.equal(p, dict(base.transformer.named_parameters())[name])]
    assert len(changed) > 10
    assert torch.equal(next(tuned.vae.parameters()), next(base.vae.parameters()))


class _Faults(FinetuneHooks):
    """Rank 1 is sent SIGTERM after step 3 (a spot node's notice reaching its processes); later, on the attempt that
    resumed from that checkpoint, rank 0's process exits at step 5 as a lost node's would (os._exit, no exception).
    Each happens once: marker files say it did."""

    def __init__(self, folder: Path):
        self.sigterm, self.died = folder / "sigterm", folder / "died"

    def after_step(self, rank: int, step: int) -> None:
        if rank == 1 and step == 3 and not self.sigterm.exists():
            self.sigterm.write_text("sent")
            os.kill(os.getpid(), signal.SIGTERM)
            assert _SIGTERM.wait(10)  # the handler runs on the worker's main thread: wait until it has
        if rank == 0 and step == 5 and not self.died.exists():
            self.died.write_text("died")
            os._exit(1)


def test_sigterm_checkpoints_its_step_and_a_lost_worker_resumes_from_the_last_checkpoint(ray_cluster, footage,
                                                                                      tiny_pipelines, tmp_path):
    runs = tmp_path / "runs"
    # what is asserted is steps, checkpoints and metrics rows: one validation batch, and the checkpoints' renders
    # with 2 sampler steps instead of the Wan pipeline's default 50
    cfg = FinetuneConfig(model=str(tiny_pipelines["wan"]), data=footage, runs=str(runs), steps=6, workers=2,
                         lora={"rank": 2}, validate_every=6, checkpoint_every=6, max_failures=2, num_to_keep=5,
                         validation_batches=1, validation_steps=2)
    faults = _Faults(tmp_path)
    summary = run_finetune(cfg, hooks=faults)
    assert faults.sigterm.exists() and faults.died.exists() and summary["steps"] == 6
    checkpoints = sorted(p.name for p in (runs / summary["run"]).glob("checkpoint_step*"))
    assert checkpoints == ["checkpoint_step00000003", "checkpoint_step00000006"]  # step 3: the notice's
    rows = (Path(summary["package"]) / "metrics.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [1, 2, 3, 4, 5, 6]  # 4-5 lost with the worker, redone


def test_bulk_render_with_the_adapter_records_it_and_renders_again_without_it(lora_run, tiny_pipelines, tmp_path):
    from jobs.render import RenderConfig, render

    _, summary = lora_run
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "prompt": "a red square moving left", "seed": 7}\n')
    base = dict(manifest=str(manifest), model=str(tiny_pipelines["wan"]), out=str(tmp_path / "out"), frames=5,
                height=32, width=32, steps=2, actors=1)
    tuned = render(RenderConfig(**base, pipeline={"lora": summary["package"]}))
    assert tuned["rendered_now"] == 1
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert record["model"].startswith("tiny-wan#") and "+adapter#" in record["model"]
    plain = render(RenderConfig(**base))  # another model for the ledger: rendered again, not "done before"
    assert plain["rendered_now"] == 1 and plain["already_done"] == 0
