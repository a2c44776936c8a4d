"""Ray Train + DeepSpeed on a real local Ray cluster: 2 CPU workers with gloo, ZeRO 2 and 3, from S3 shards."""

import csv
import os
import uuid

import pytest

from jobs._train_worker import StepHooks
from jobs.train import TrainingError, load_run_config, run_training
from jobs.train_config import DistributedConfig, deepspeed_config
from storage.cards import parse_card
from storage.objectstore import ObjectStore
from storage.registry import pull
from vidgen.diffusion import SamplerConfig
from vidgen.model import PRESETS
from vidgen.pipelines.packages import load_model
from vidgen.runs.generate import generate
from vidgen.training import TrainConfig

MICRO = {"dim": 48, "depth": 2, "heads": 2, "ae_channels": 8}


def _train(steps: int, model: dict | None = None, **overrides) -> TrainConfig:
    return TrainConfig(model=model or {}, max_steps=steps, batch_size=8, warmup_steps=5, autoencoder_steps=40,
                       eval_clips=4, sampler=SamplerConfig(steps=4), torch_threads=1, precision="float32", ema_decay=0,
                       **overrides)


def _history(folder) -> list[dict]:
    with open(folder / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_deepspeed_config_follows_the_job_config():
    cfg = DistributedConfig(train=_train(10), zero_stage=3, offload_optimizer=True, gradient_accumulation=4)
    ds = deepspeed_config(cfg)
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["offload_optimizer"] == {"device": "cpu", "pin_memory": False}
    assert ds["zero_optimization"]["reduce_bucket_size"] == cfg.bucket_elements
    assert ds["gradient_accumulation_steps"] == 4 and ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["gradient_clipping"] == 1.0 and ds["bf16"] == {"enabled": False}  # autocast is the train step's
    with pytest.raises(ValueError, match="zero_stage"):
        DistributedConfig(zero_stage=4)


@pytest.mark.slow
def test_zero2_trains_tiny_from_s3_shards_and_the_package_generates(s3_dataset, s3_config, tmp_path):
    from storage.objectstore import parse_uri
    from storage.training_checkpoints import run_key

    uri, _, _ = s3_dataset
    cfg = DistributedConfig(train=_train(36), workers=2, zero_stage=2, data=uri, runs=str(tmp_path / "runs"),
                            checkpoint_every=18, s3=s3_config)
    shown = tmp_path / "runtime_env.json"

    class RecordWhatRayShows(StepHooks):  # the worker's runtime_env: what Ray's dashboard and state API show
        def after_step(self, rank: int, step: int) -> None:
            import ray

            if step == 1:
                shown.with_suffix(f".rank{rank}").write_text(ray.get_runtime_context().get_runtime_env_string())

    summary = run_training(cfg, hooks=RecordWhatRayShows())
    assert summary["steps"] == 36 and summary["final_loss"] < 0.8 * summary["first_loss"]
    key = run_key(parse_uri(cfg.runs).uri, summary["run"]).hex()
    for rank in (0, 1):  # the workers found the credentials and derived the key on their node; Ray carried neither
        env = shown.with_suffix(f".rank{rank}").read_text()
        assert key not in env and s3_config.secret_access_key not in env and s3_config.access_key_id not in env
    assert sorted(p.name for p in (tmp_path / "runs" / summary["run"]).glob("checkpoint_step*")) == [
        "checkpoint_step00000018", "checkpoint_step00000036"]
    package = tmp_path / "runs" / summary["run"] / "model"
    history = _history(package)
    assert [int(h["step"]) for h in history] == list(range(1, 37))
    assert (package / "loss_curve.png").stat().st_size > 0
    model = load_model(package)  # consolidated weights in a plain vidgen model (hashes verified first)
    assert model.config == PRESETS["tiny"]
    clips = generate(package, ["a red square moving right", "a blue circle moving up"], [0, 1], steps=3)
    assert clips.frames.shape == (2, 8, 32, 32, 3)
    card, _ = parse_card((package / "card.md").read_text())
    assert card["pipeline_tag"] == "text-to-video" and card["datasets"] == [uri]
    lineage = card["lineage"]
    assert lineage["dataset"] == uri and len(lineage["dataset_card_sha256"]) == 64 and lineage["zero_stage"] == 2
    assert lineage["seed"] == 0 and lineage["git_commit"] and lineage["run"].endswith(summary["run"])
    assert lineage["command"] == "python -m jobs.train --config job.json"


@pytest.mark.slow
def test_zero3_with_checkpoints_on_s3_pushes_to_the_registry(s3_dataset, s3_config, tmp_path):
    uri, _, _ = s3_dataset
    bucket = f"s3://runs-{uuid.uuid4().hex[:10]}"
    # the micro model on the tiny preset's clips: the zero2 test above trains `tiny` itself; ZeRO-3's partitioning,
    # checkpoints on S3, their retention and the push are the same for any size
    cfg = DistributedConfig(train=_train(30, MICRO), workers=2, zero_stage=3, data=uri, runs=f"{bucket}/runs",
                            push=f"{bucket}/models/shapes", checkpoint_every=10, num_to_keep=2, s3=s3_config)
    summary = run_training(cfg)
    assert summary["steps"] == 30 and summary["final_loss"] < 0.8 * summary["first_loss"]
    store = ObjectStore(s3_config)
    checkpoints = {part for o in store.list(f"{bucket}/runs/{summary['run']}") for part in o.uri.split("/")
                   if part.startswith("checkpoint_step")}
    assert checkpoints == {"checkpoint_step00000020", "checkpoint_step00000030"}  # 10 went: num_to_keep=2
    folder = pull(f"{bucket}/models/shapes@latest", store=store, cache_dir=tmp_path / "cache")
    assert load_model(folder).config == PRESETS["tiny"].model_copy(update=MICRO)


@pytest.mark.slow
def test_a_lost_worker_and_a_stopped_run_resume_and_a_tampered_checkpoint_is_refused(tmp_path):
    """One run proves three things (each Ray Train start costs ~50 s): a worker lost mid-run restarts from the last
    checkpoint, a finished run resumes through the CLI to more steps, a changed checkpoint file is refused."""
    from typer.testing import CliRunner

    from vidgen.cli import app

    runs, marker = tmp_path / "runs", tmp_path / "rank1-exited"
    # what is asserted is steps, checkpoints and files, not what the model learnt: a 2-step autoencoder (4 s less a
    # fresh start), and each package's evaluation on 2 clips (the fewest its distances take) sampled in 2 steps
    small = {"batch_size": 4, "autoencoder_steps": 2, "eval_clips": 2, "sampler": SamplerConfig(steps=2)}
    cfg = DistributedConfig(train=_train(4, MICRO).model_copy(update=small),
                            workers=2, zero_stage=3, runs=str(runs), checkpoint_every=2, max_failures=1)

    class RankOneDiesOnce(StepHooks):  # defined here, so it travels to the workers by value
        def after_step(self, rank: int, step: int) -> None:
            if rank == 1 and step == 3 and not marker.exists():
                marker.write_text("rank 1 exited at step 3\n")
                os._exit(1)  # as a lost node would: no exception, no clean-up

    name = run_training(cfg, hooks=RankOneDiesOnce())["run"]
    assert marker.exists()  # rank 1 really died once
    before = _history(runs / name / "model")
    assert [int(h["step"]) for h in before] == [1, 2, 3, 4]  # steps 3-4 redone after the restart, once each
    assert load_run_config(str(runs), name).train.max_steps == 4

    resumed = CliRunner().invoke(app, ["train", "--resume", name, "--runs", str(runs), "--steps", "8"])
    assert resumed.exit_code == 0, resumed.output
    after = _history(runs / name / "model")
    assert [int(h["step"]) for h in after] == list(range(1, 9))
    assert [h["loss"] for h in after[:4]] == [h["loss"] for h in before]  # the same curve, continued

    latest = max(p for p in runs.joinpath(name).glob("checkpoint_*") if p.is_dir())
    states = next(latest.rglob("*optim_states.pt"))
    data = bytearray(states.read_bytes())
    data[len(data) // 2] ^= 0xFF
    states.write_bytes(bytes(data))
    cfg = load_run_config(str(runs), name).model_copy(update={"max_failures": 0})
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_steps": 10})})
    with pytest.raises(TrainingError, match=rf"{states.name} does not match the sha256"):
        run_training(cfg, resume=name)


def test_s3_credentials_never_travel_in_the_config_ray_train_keeps(s3_config):
    import json
    import pickle

    from jobs.train import worker_config

    cfg = DistributedConfig(train=_train(2), s3=s3_config)
    sent = json.dumps(worker_config(cfg))
    assert s3_config.secret_access_key not in sent and s3_config.access_key_id not in sent
    assert s3_config.endpoint_url in sent  # where S3 is may travel; who we are there comes from the environment
    fs, _ = ObjectStore(s3_config).filesystem("s3://runs/x", for_ray=True)  # what Ray pickles for the workers
    assert s3_config.secret_access_key.encode() not in pickle.dumps(fs)


def test_a_changed_job_json_is_refused_on_resume(tmp_path, monkeypatch):
    """--resume takes data, out and push from job.json: a copy changed in the runs store must not steer it."""
    from jobs.train import JOB_FILE, write_run_config
    from storage.objectstore import StorageError, parse_uri
    from storage.training_checkpoints import run_key

    monkeypatch.setenv("VIDGEN_HOME", str(tmp_path / "home"))
    runs, name = str(tmp_path / "runs"), "tiny-20261201-000000"
    cfg = DistributedConfig(train=_train(4), runs=runs)
    write_run_config(ObjectStore(), parse_uri(runs).join(name), cfg,
                     run_key(parse_uri(runs).uri, name, create_secret=True))
    assert load_run_config(runs, name).train.max_steps == 4
    job = tmp_path / "runs" / name / JOB_FILE
    job.write_text(job.read_text().replace('"push": null', '"push": "s3://elsewhere/models/shapes"'))
    with pytest.raises(StorageError, match="was changed after run .* wrote it"):
        load_run_config(runs, name)
    monkeypatch.setenv("VIDGEN_HOME", str(tmp_path / "another-machine"))  # which has no runs secret
    with pytest.raises(StorageError, match="cannot resume run .*: no runs secret on this machine"):
        load_run_config(runs, name)


def test_a_gpu_run_on_a_local_ray_without_gpus_is_refused_at_once(ray_cluster, tmp_path):
    """Ray Train would wait forever for GPUs no node of a local Ray has (seen: `vidgen finetune` with the shipped
    GPU config on a CPU machine printed autoscaler errors for minutes); a cluster joined by address may get them."""
    from jobs.connection import require_gpus

    cfg = DistributedConfig(train=_train(2), workers=2, use_gpu=True, runs=str(tmp_path / "runs"))
    with pytest.raises(ValueError, match=r"use_gpu: the local Ray has 0 GPU\(s\) and the run needs 2"):
        run_training(cfg)
    require_gpus("auto", 2)  # joined by address: left to the cluster
