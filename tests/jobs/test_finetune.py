"""`vidgen finetune` end to end on a real local Ray: footage ingested from the example corpus, a tiny random-weight
Wan pipeline, LoRA on 2 DeepSpeed workers, the adapter package loaded in plain diffusers, latents reused by a second
run, a resume on 1 worker of a run started on 2. Variants of the objective and recipes run in-process in
tests/vidgen/runs/test_finetune.py."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.test_videos import make_corpus
from jobs.finetune import FinetuneConfig, run_finetune
from jobs.ingest import IngestConfig, ingest
from storage.package import verify_package

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
                         lora={"rank": 4})
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


def test_the_adapter_loads_in_plain_diffusers_and_changes_the_output(lora_run, tiny_pipelines):
    from diffusers import DiffusionPipeline

    _, summary = lora_run
    pipe = DiffusionPipeline.from_pretrained(tiny_pipelines["wan"], local_files_only=True)
    before = _render(pipe)
    pipe.load_lora_weights(summary["package"], weight_name="pytorch_lora_weights.safetensors")
    after = _render(pipe)
    assert np.abs(after - before).max() > 1e-3
