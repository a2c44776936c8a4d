"""Fine-tune a diffusers video pipeline (Wan, LTX-Video, CogVideoX) on a vidgen data set: LoRA or full, on Ray Train
+ DeepSpeed ZeRO, from latents precomputed once.

    vidgen finetune --model tiny-wan@v1 --data s3://bucket/my-videos --lora-rank 16 --workers 2 --steps 500
    python -m jobs.finetune --config finetune.yaml [--address auto] [--resume NAME]    # a FinetuneConfig as YAML
    ray job submit --working-dir . -- python -m jobs.finetune --config finetune.yaml --address auto

1. **Precompute** (a Ray Data stage): actors holding the pipeline's VAE and text encoder (its transformer dropped)
   encode every clip, fitted to the nearest shape the model makes, and its caption into latent shards, cached
   under (model digest, data set digest, shape cap, recipe, dtype) in `latent_cache`: a later run of the same key
   encodes nothing. The training workers never load the VAE or the text encoder.
2. **Train** (`jobs._finetune_worker.finetune_loop` on a TorchTrainer): the transformer alone, a LoRA adapter on it
   (peft) or all of it, under DeepSpeed ZeRO 0-3 (optionally offloading optimizer states), each rank on its part of
   the latent shards; validation loss on held-out latents at fixed noise; authenticated, world-size-free
   checkpoints; a lost worker restarts the group from the last one (FailureConfig), `--resume NAME` continues a
   stopped run on any number of workers.
3. **Package**: from the last checkpoint, an adapter package (diffusers' LoRA format, adapter.json naming the base
   by digest, card, sums) or a whole pipeline folder, written to `out` and optionally pushed to the registry; a few
   fixed prompts and seeds are rendered with the result into RUNS/NAME/validation/.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from jobs._entrypoint import job_arguments
from jobs._finetune_worker import (
    FinetuneHooks,
    build_transformer,
    finetune_loop,
    load_trainable,
    sigterm_callback,
    verified_checkpoint,
)
from jobs.connection import connect_ray, require_gpus
from jobs.finetune_config import FinetuneConfig
from jobs.train import TrainingError, fit_run, load_run_config, write_run_config
from storage.cards import invoked_command
from storage.latent_shards import LatentSet, LatentShardEntry, find_latent_set, finish_latent_set, latent_set_location
from storage.objectstore import ObjectStore, S3Config, StorageError, parse_uri
from storage.training_checkpoints import run_key

log = logging.getLogger(__name__)
ENCODE_BATCH = 4  # clips per VAE call in the precompute actors


class LatentEncoder:
    """A Ray Data actor of the precompute stage: loads the pipeline's VAE and text encoder once (on its own node, from
    the model reference, verified there) and writes each batch of clips it is given as latent shards; returns the
    shards' index entries for the driver to write the one index."""

    def __init__(self, model_ref: str, key: dict, root: str, s3: dict, use_gpu: bool):
        from storage.latent_shards import CacheKey, LatentSetWriter
        from vidgen.pipelines.diffusers_folder import load_without
        from vidgen.pipelines.references import verify_model

        self.pipe = load_without(verify_model(model_ref), "transformer")
        if use_gpu:
            self.pipe.vae.to("cuda")
            self.pipe.text_encoder.to("cuda")
        self.writer = LatentSetWriter(ObjectStore(S3Config.model_validate(s3)), root, CacheKey.from_dict(key))

    def __call__(self, batch: dict) -> dict:
        from vidgen.runs.finetune_precompute import clips_from_columns, write_buckets

        before = len(self.writer.entries)
        write_buckets(self.pipe, clips_from_columns([batch]), self.writer, ENCODE_BATCH)
        made = self.writer.entries[before:]
        return {"entry": [json.dumps(e.to_dict()) for e in made]}


def precompute(cfg: FinetuneConfig, model, store: ObjectStore) -> LatentSet:
    """The run's latent set: found in the cache, or made by the precompute stage."""
    import ray.data

    from storage.latent_shards import dataset_digest
    from storage.stream import ReaderConfig, read_dataset
    from vidgen.pipelines.diffusers_folder import model_skeleton
    from vidgen.pipelines.references import model_digest
    from vidgen.runs.finetune_precompute import SAMPLES_PER_SHARD, cache_key

    key = cache_key(model_skeleton(model), model_digest(model.sums), dataset_digest(store, cfg.data), cfg.max_shape)
    found = find_latent_set(store, cfg.cache_root, key)
    if found is not None:
        log.info("reusing the precomputed latents at %s (%s)", found.location.uri, found.index.counts())
        return found
    location = latent_set_location(cfg.cache_root, key)
    log.info("precomputing latents of %s into %s", cfg.data, location.uri)
    stream = read_dataset(cfg.data, ReaderConfig(splits=None, video_dtype="uint8", s3=cfg.s3))
    rows = stream.map_batches(
        LatentEncoder, batch_size=SAMPLES_PER_SHARD, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.workers),
        num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu else 0,
        fn_constructor_kwargs={"model_ref": _worker_ref(cfg.model),
                               "key": key.to_dict(), "root": cfg.cache_root, "s3": cfg.s3.public(),
                               "use_gpu": cfg.use_gpu}).take_all()
    entries = [LatentShardEntry.from_dict(json.loads(row["entry"])) for row in rows]
    latent_set = finish_latent_set(store, location, key, entries)
    log.info("precomputed %d samples: %s", latent_set.index.num_samples, latent_set.index.counts())
    return latent_set


def _worker_ref(ref: str) -> str:
    """The model reference as Ray workers resolve it: a local folder by its absolute path (the same machine, or a
    file system every node mounts), anything else as given."""
    return str(Path(ref).resolve()) if Path(ref).is_dir() else ref


def worker_config(cfg: FinetuneConfig, latents: LatentSet, model_ref: str) -> dict:
    """What the workers get as `train_loop_config` (Ray Train shows it): no S3 credentials, which the workers find
    in their node's own AWS chain."""
    job = {**cfg.model_dump(mode="json", exclude={"s3"}), "s3": cfg.s3.public(), "model": model_ref}
    return {"job": job, "latents": latents.location.uri}


def _run_summary(cfg: FinetuneConfig, name: str, state: dict, data_digest: str, world: int) -> dict:
    from vidgen.runs.cards import loss_span

    history = state["history"]
    return {"run": name, "steps": state["step"], "history": history, "validation": state["validation"],
            **loss_span([h["loss"] for h in history]), "data": cfg.data,
            "data_digest": data_digest, "workers": world, "zero_stage": cfg.zero_stage, "seed": cfg.seed,
            "command": invoked_command(f"python -m jobs.finetune ({cfg.method})")}


def write_result(cfg: FinetuneConfig, model, checkpoint, name: str, store: ObjectStore) -> dict:
    """Package the run's last checkpoint (verified) as the config says, upload it to `out`, push it if asked."""
    from storage.latent_shards import dataset_digest
    from storage.package import verify_package
    from storage.registry import push, upload_package
    from vidgen.pipelines.diffusers_folder import model_skeleton
    from vidgen.runs.finetune_objective import objective_of
    from vidgen.runs.finetune_package import write_adapter_package, write_full_package

    skeleton = model_skeleton(model)
    pipeline_class = type(skeleton).__name__
    transformer = build_transformer(cfg, model, objective_of(skeleton))
    key = run_key(parse_uri(cfg.runs).uri, name)
    with verified_checkpoint(checkpoint, name, key) as (state, weights):
        load_trainable(transformer, weights, checkpoint.path)
    run = _run_summary(cfg, name, state, dataset_digest(store, cfg.data), state.get("world_size", cfg.workers))
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch, "package")
        if cfg.method == "lora":
            write_adapter_package(folder, model, pipeline_class, transformer, cfg.lora, run)
        else:
            write_full_package(folder, model, pipeline_class, transformer, run)
        sums = verify_package(folder)
        upload_package(folder, parse_uri(cfg.out), sums, store)
        version = push(folder, _registry_uri(cfg.push), store) if cfg.push else None
    return {**{k: v for k, v in run.items() if k != "history"}, "package": parse_uri(cfg.out).shown,
            "pushed": version}


def validation_plan(cfg: FinetuneConfig, latents: LatentSet, store: ObjectStore):
    """The prompts (given, or the first two eval captions), seeds and shape (the held-out bucket's) to render."""
    from storage.latent_shards import read_shard
    from vidgen.runs.finetune_renders import ValidationPlan

    shards = latents.shards(("eval",)) or latents.shards(("train",))
    prompts = cfg.validation_prompts or read_shard(store, latents, shards[0]).captions[:2]
    return ValidationPlan(list(prompts), list(cfg.validation_seeds), shards[0].shape, cfg.validation_steps)


def render_validation(config: dict, checkpoint_paths: list[str], run: str, plan, renders_uri: str) -> list[dict]:
    """A Ray task (on a GPU when the run has them): render `plan` with the weights of each checkpoint, verified on
    this node under the run's key, into RENDERS_URI (MP4s and preview.png)."""
    from ray.train import Checkpoint

    from vidgen.pipelines.load import load_pipeline
    from vidgen.pipelines.options import PipelineOptions
    from vidgen.runs.finetune_renders import render_checkpoints

    cfg = FinetuneConfig.model_validate(config)
    store = ObjectStore(S3Config.model_validate(cfg.s3.public()))
    fs, _ = store.filesystem(parse_uri(cfg.runs), for_ray=True)
    key = run_key(parse_uri(cfg.runs).uri, run)
    pipeline = load_pipeline(cfg.model, device="cuda" if cfg.use_gpu else "cpu",
                             options=PipelineOptions(dtype=cfg.precision))

    def weights():
        for path in checkpoint_paths:
            with verified_checkpoint(Checkpoint(path, fs), run, key) as (state, trainable):
                yield state["step"], trainable

    with tempfile.TemporaryDirectory() as scratch:
        records = render_checkpoints(pipeline, cfg.lora if cfg.method == "lora" else None, weights(), plan,
                                     Path(scratch), load_trainable)
        for path in sorted(Path(scratch).rglob("*")):
            if path.is_file():
                store.write(parse_uri(renders_uri).join(str(path.relative_to(scratch))), path.read_bytes())
    return [{**r, "video": r["video"].replace(scratch, renders_uri)} for r in records]


def _registry_uri(push: str) -> str:
    """`--push NAME` goes to the local registry (`$VIDGEN_REGISTRY` or ~/.vidgen/registry); a URI as it is."""
    from storage.registry import model_location
    from storage.user_state import registry_root

    return push if "://" in push or "/" in push else model_location(registry_root(), push).uri


def run_finetune(cfg: FinetuneConfig, address: str | None = None, resume: str | None = None,
                 hooks: FinetuneHooks | None = None) -> dict:
    """Run (or resume) a fine-tuning job; returns its summary (run, steps, losses, validation, package URI)."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from storage.audits import warn_unacted_audit_flags
    from vidgen.pipelines.diffusers_folder import model_skeleton
    from vidgen.pipelines.references import verify_model
    from vidgen.runs.finetune_objective import objective_of

    store = ObjectStore(cfg.s3)
    model = verify_model(cfg.model)
    objective_of(model_skeleton(model))  # a pipeline without a recipe or objective is refused before Ray starts
    warn_unacted_audit_flags(cfg.data, store)
    runs = parse_uri(cfg.runs)
    name = resume or f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = runs.join(name)
    has_state = bool(store.list(run_dir)) if store.bucket_exists(runs) else False
    if resume and not has_state:
        raise StorageError(f"no run {name!r} under {runs.uri} to resume")
    if not resume and has_state:
        raise StorageError(f"{run_dir.uri} already exists: resume it with --resume {name} or wait a second")
    # absolute URIs: the workers (whose working directory is not ours) derive the run's key from `runs`
    cfg = cfg.model_copy(update={"runs": runs.uri, "latent_cache": parse_uri(cfg.cache_root).uri,
                                 "out": parse_uri(cfg.out).uri if cfg.out else
                                 run_dir.join("adapter" if cfg.method == "lora" else "model").uri})
    store.ensure_bucket(runs)
    write_run_config(store, run_dir, cfg, run_key(runs.uri, name, create_secret=not resume))
    # A local cluster gets a CPU slot per worker plus one for Ray Data's read tasks, even on a smaller machine: slots
    # are scheduling tokens, and with the precompute actors holding every slot the reads would never run.
    connect_ray(address, num_cpus=max(os.cpu_count() or 1, cfg.workers * cfg.cpus_per_worker + 1),
                credentials=cfg.s3.credentials_env())
    if cfg.use_gpu:
        require_gpus(address, cfg.workers)
    latents = precompute(cfg, model, store)
    fs, path = store.filesystem(runs, for_ray=True)
    trainer = TorchTrainer(
        functools.partial(finetune_loop, hooks=hooks),
        train_loop_config=worker_config(cfg, latents, _worker_ref(cfg.model)),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=name, storage_path=path, storage_filesystem=fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=cfg.num_to_keep),
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             callbacks=[sigterm_callback()]),
    )
    log.info("run %s: %s fine-tuning of %s on %d workers, ZeRO-%d, checkpoints in %s", name, cfg.method,
             model.label, cfg.workers, cfg.zero_stage, run_dir.uri)
    result = fit_run(trainer, name)
    if result.checkpoint is None:
        raise TrainingError(f"run {name} ended without a checkpoint")
    kept = sorted((c.path for c, _ in result.best_checkpoints), key=os.path.basename)
    renders = run_dir.join("validation")
    log.info("rendering the validation prompts with %d checkpoints into %s", len(kept), renders.uri)
    task = ray.remote(render_validation).options(num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu else 0)
    rendered = ray.get(task.remote(worker_config(cfg, latents, _worker_ref(cfg.model))["job"], kept, name,
                                   validation_plan(cfg, latents, store), renders.uri))
    summary = write_result(cfg, model, result.checkpoint, name, store)
    return {**summary, "run_dir": run_dir.shown, "latents": latents.location.shown,
            "renders": renders.shown if rendered else None}


def load_finetune_config(runs: str, name: str, s3: S3Config | None = None) -> FinetuneConfig:
    """The config a fine-tuning run was started with, once its HMAC proves this run wrote it."""
    return load_run_config(runs, name, s3, FinetuneConfig)


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, FinetuneConfig,
                              ("--resume", {"default": None, "help": "name of a run under `runs` to continue"}))
    summary = run_finetune(cfg, args.address, args.resume)
    log.info("done: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
