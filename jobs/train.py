"""Distributed training: Ray Train's TorchTrainer runs DeepSpeed ZeRO workers, fed by Ray Data from object storage.

Same code on a laptop CPU (gloo, fp32) and a GPU cluster (NCCL, bf16 autocast): only `DistributedConfig` changes.
Each worker runs `jobs._train_worker.train_loop`: the frame autoencoder is trained on rank 0 and broadcast, then
the transformer trains under `deepspeed.initialize` with the shared train step (`vidgen.training.compute_loss`),
checkpoints every K steps through `ray.train.report` (every rank writes and hashes its ZeRO shard), and at the end
the shards are consolidated into one fp32 state dict, evaluated and written as a model package.

Run it:
    vidgen train --preset tiny --workers 2 --zero 3 --data data/shapes --steps 200   # starts a local Ray
    vidgen train --resume tiny-20261126-101500 --steps 400                           # continue a stopped run
    python -m jobs.train --config job.yaml [--address auto] [--resume NAME]          # a DistributedConfig as YAML
    ray job submit --working-dir . -- python -m jobs.train --config job.yaml --address auto

Edges found on these machines (DeepSpeed 0.19.8, Ray 2.60 with Train V2, torch 2.13 CPU):
- With no CUDA, DeepSpeed picks its CPU accelerator; `deepspeed.initialize(dist_init_required=False)` reuses the
  gloo process group Ray Train made. Its first start JIT-compiles a shared-memory all-reduce op (~20 s, cached
  under ~/.cache/torch_extensions; needs a C++ compiler).
- DeepSpeed's Adam kernels (FusedAdam, DeepSpeedCPUAdam) are compiled ops; the job hands DeepSpeed the local
  trainer's torch AdamW and warm-up schedule instead (`zero_force_ds_cpu_optimizer: false` lets ZeRO-Offload
  accept it).
- DeepSpeed's checkpoints are pickles: each rank records the sha256 of what it wrote, and every file is checked
  (`storage.training_checkpoints.verify_checkpoint`) before DeepSpeed may read any of them.
- Train V2 (the default in Ray 2.60) restores a run from the checkpoint-manager snapshot it keeps in
  RUNS/NAME: a new run must get a new name, and resuming is starting the same name again.
- Frozen parameters (the autoencoder) are sharded by ZeRO-3 like the rest; DeepSpeed saves and restores them as
  "frozen fragments", so they need no checkpoint of their own.
- No EMA: under ZeRO-3 each rank holds a slice of the weights; the package holds the trained weights.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time

from pydantic import BaseModel

from jobs._entrypoint import job_arguments
from jobs._train_worker import StepHooks, train_loop
from jobs.connection import connect_ray, require_gpus
from jobs.train_config import DistributedConfig
from storage.cards import parse_card
from storage.objectstore import NotFound, ObjectStore, S3Config, StorageError, parse_uri
from storage.package import CARD_FILE
from storage.training_checkpoints import MAC_SUFFIX, RunKeyError, mac, mac_matches, run_key

log = logging.getLogger(__name__)
JOB_FILE = "job.json"
MAX_PASSES = 1000  # over data set passes per stream; a longer run pays Ray Data's restart once per 1000 passes


class TrainingError(RuntimeError):
    """The run failed; the message carries the worker's own error."""


def _root_cause(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


def fit_run(trainer, name: str):
    """`trainer.fit()`, a failure being a TrainingError with the worker's own message (Ray wraps it)."""
    try:
        return trainer.fit()
    except Exception as e:
        raise TrainingError(f"run {name} failed: {_root_cause(e)}") from e


def _check_data(cfg: DistributedConfig, store: ObjectStore):
    """The training split of the data set as a Ray Data stream, after checking it fits the model."""
    from storage.audits import warn_unacted_audit_flags
    from storage.datasets import open_dataset
    from storage.stream import ReaderConfig, read_dataset

    dataset = open_dataset(store, cfg.data)
    warn_unacted_audit_flags(cfg.data, store, dataset.card)
    model = cfg.train.model_config_resolved()
    shape = dataset.card.get("clip_shape")
    if shape and list(shape[:3]) != [model.frames, model.height, model.width]:
        raise ValueError(f"data set {cfg.data} holds {shape[0]}x{shape[1]}x{shape[2]} clips but model preset "
                         f"{cfg.train.preset!r} makes {model.frames}x{model.height}x{model.width}: prepare a data set "
                         "with matching --frames/--height/--width or choose another preset")
    train = cfg.train
    clips_needed = (train.max_steps * cfg.gradient_accumulation + train.autoencoder_steps + 2) * train.batch_size
    passes = min(MAX_PASSES, math.ceil(clips_needed * cfg.workers / dataset.index.counts()["train"]))
    return read_dataset(cfg.data, ReaderConfig(splits=["train"], video_dtype="uint8", passes=passes,
                                               seed=train.seed, s3=cfg.s3,
                                               clip_shape=(model.frames, model.height, model.width)))


def write_run_config(store: ObjectStore, run_dir, cfg: BaseModel, key: bytes) -> None:
    """RUNS/NAME/job.json (no S3 credentials) and its HMAC under the run's key."""
    job = cfg.model_dump_json(indent=1, exclude={"s3"}).encode()
    store.write(run_dir.join(JOB_FILE), job)
    store.write(run_dir.join(JOB_FILE + MAC_SUFFIX), mac(job, key).encode())


def load_run_config(runs: str, name: str, s3: S3Config | None = None,
                    config_cls: type[BaseModel] = DistributedConfig) -> BaseModel:
    """The config a run was started with (RUNS/NAME/job.json, without S3 credentials), once its HMAC under the
    run's key proves that this run wrote it: `--resume` takes data, out and push from it."""
    store = ObjectStore(s3 or S3Config())
    job = parse_uri(runs).join(name, JOB_FILE)
    try:
        data, presented = store.read(job), store.read(job.uri + MAC_SUFFIX)
    except NotFound:
        raise StorageError(f"no run {name!r} under {parse_uri(runs).uri} (no authenticated {JOB_FILE}); check "
                           "--runs and the name printed when the run started") from None
    try:
        key = run_key(parse_uri(runs).uri, name)
    except RunKeyError as e:
        raise StorageError(f"cannot resume run {name!r}: {e}") from None
    if not mac_matches(data, presented, key):
        raise StorageError(f"{job.uri} was changed after run {name!r} wrote it, or the run was started with another "
                           "runs secret (its HMAC does not match the run's key); refusing to resume from it")
    return config_cls.model_validate({**json.loads(data), "s3": store.s3})


def worker_config(cfg: DistributedConfig) -> dict:
    """The config the workers get, as `train_loop_config` (which Ray Train keeps and shows): S3 credentials left
    out; the workers find them in their node's own AWS chain (environment at `ray start`, instance profile, service
    account), as they derive the run's key from their node's runs secret."""
    return {**cfg.model_dump(mode="json", exclude={"s3"}), "s3": cfg.s3.public()}


def run_training(cfg: DistributedConfig, address: str | None = None, resume: str | None = None,
                 hooks: StepHooks | None = None) -> dict:
    """Run (or resume) a distributed training job and return its final metrics, package URI and run name.

    `hooks`: a seam into every worker's loop for tests and benchmarks (`jobs._train_worker.StepHooks`).
    """
    from ray.data import ExecutionOptions, ExecutionResources
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    store = ObjectStore(cfg.s3)
    runs = parse_uri(cfg.runs)
    name = resume or f"{cfg.train.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = runs.join(name)
    has_state = bool(store.list(run_dir)) if store.bucket_exists(runs) else False
    if resume and not has_state:
        raise StorageError(f"no run {name!r} under {runs.uri} to resume; runs there: "
                           f"{sorted({o.uri.removeprefix(runs.uri + '/').split('/')[0] for o in store.list(runs)})}")
    if not resume and has_state:
        raise StorageError(f"{run_dir.uri} already exists: resume it with --resume {name} or wait a second")
    # absolute URIs: the workers (whose working directory is not ours) derive the run's key from `runs`
    cfg = cfg.model_copy(update={"runs": runs.uri, "out": parse_uri(cfg.out).uri if cfg.out else
                                 run_dir.join("model").uri})
    store.ensure_bucket(runs)
    key = run_key(runs.uri, name, create_secret=not resume)
    write_run_config(store, run_dir, cfg, key)
    # A local cluster gets a CPU slot per worker plus one for the Ray Data stream, even on a smaller machine:
    # slots are scheduling tokens, and a stream with no slot left would starve the workers.
    connect_ray(address, num_cpus=max(os.cpu_count() or 1, cfg.workers * cfg.cpus_per_worker + 1),
                credentials=cfg.s3.credentials_env())
    if cfg.use_gpu:
        require_gpus(address, cfg.workers)
    datasets = {} if cfg.data == "synth" else {"train": _check_data(cfg, store)}
    fs, path = store.filesystem(runs, for_ray=True)

    # The stream may run ahead of the trainers by this much decoded video, no more: unbounded, it took the CPU
    # the first steps needed (measured: steps 0.65 s instead of 0.4 s until backpressure set in).
    data_options = ExecutionOptions(resource_limits=ExecutionResources(object_store_memory=cfg.stream_buffer_mb
                                                                       * 2**20))
    trainer = TorchTrainer(
        functools.partial(train_loop, hooks=hooks),
        train_loop_config=worker_config(cfg),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        datasets=datasets,
        dataset_config=DataConfig(execution_options=data_options),
        run_config=RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)),
    )
    log.info("run %s: %d workers, ZeRO-%d, data %s, checkpoints in %s", name, cfg.workers, cfg.zero_stage,
             cfg.data, run_dir.uri)
    result = fit_run(trainer, name)
    card, _ = parse_card(store.read(parse_uri(cfg.out).join(CARD_FILE)).decode(), CARD_FILE)
    return {"run": name, "run_dir": run_dir.shown, "package": parse_uri(cfg.out).shown,
            "steps": card["lineage"]["training_steps"],
            "last_checkpoint": result.checkpoint.path if result.checkpoint else None, **card["metrics"]}


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, DistributedConfig,
                              ("--resume", {"default": None, "help": "name of a run under `runs` to continue"}))
    summary = run_training(cfg, args.address, args.resume)
    log.info("done: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
