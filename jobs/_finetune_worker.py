"""The loop each Ray Train worker of a fine-tuning run runs: the transformer alone (no VAE, no text encoder), LoRA or
full, under DeepSpeed, over this rank's part of the precomputed latents.

Checkpoints are world-size free: rank 0 writes the trainable weights it holds whole (ZeRO-3 gathers them first) as
safetensors beside the trainer state, hashed and authenticated as one rank's list (`CheckpointId(run, step, 1)`), so a
run resumes on any number of workers. The weights come back exactly; AdamW's moments start again (DeepSpeed's
partitioned optimizer states are tied to the world size that wrote them) and the learning-rate schedule continues at
the checkpoint's step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from jobs._entrypoint import quiet_known_warnings
from jobs.finetune_config import FinetuneConfig, finetune_deepspeed_config
from storage.latent_shards import open_latent_set
from storage.objectstore import ObjectStore, S3Config, parse_uri
from storage.training_checkpoints import CheckpointError, CheckpointId, load_verified, run_key, write_rank_sums
from vidgen.perf import accelerator_memory
from vidgen.precision import autocast, autocast_dtype
from vidgen.runs.finetune_objective import Objective, objective_of, training_loss, validation_loss
from vidgen.runs.finetune_precompute import LatentBatch, latent_batches
from vidgen.runs.finetune_recipes import Latents
from vidgen.threads import use_torch_threads

log = logging.getLogger(__name__)
TRAINABLE_FILE, STATE_FILE = "trainable.safetensors", "trainer_state.json"
WRITER_RANKS = 1  # only rank 0 writes a fine-tuning checkpoint
SIGTERM_GRACE_S = 60  # a worker told to stop exits by then, checkpoint or not (spot notices give ~120 s)
_SIGTERM = threading.Event()


class StopNotice(RuntimeError):
    """A worker was sent SIGTERM (a spot node's notice): the run checkpointed and restarts from it."""


def _on_sigterm(signum, frame) -> None:
    if not _SIGTERM.is_set():
        _SIGTERM.set()
        timer = threading.Timer(SIGTERM_GRACE_S, os._exit, (1,))  # if no step ends to see the notice
        timer.daemon = True
        timer.start()


def listen_for_sigterm() -> None:
    """On a worker's main thread (signal handlers are set there only; the training loop runs in another thread):
    SIGTERM no longer ends the process at once (Ray's default) but tells the loop to checkpoint and stop."""
    signal.signal(signal.SIGTERM, _on_sigterm)


def sigterm_callback():
    """A Ray Train worker-group callback that makes every worker `listen_for_sigterm` once the group starts.
    (`WorkerGroupCallback` is Ray Train V2's internal callback type, which RunConfig(callbacks=) passes through;
    Ray 2.60 is pinned.)"""
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback

    class SigtermCheckpoint(WorkerGroupCallback):
        def after_worker_group_start(self, worker_group) -> None:
            worker_group.execute(listen_for_sigterm)

    return SigtermCheckpoint()


def _told_to_stop(device: torch.device) -> bool:
    """Whether any rank got SIGTERM (one small all-reduce a step, so every rank checkpoints at the same step)."""
    import torch.distributed as dist

    flag = torch.tensor([float(_SIGTERM.is_set())], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class FinetuneHooks:
    """Seams into every worker's loop for tests and benchmarks; no-ops here (subclass it where it is used)."""

    def start(self, rank: int) -> None:
        """Before the transformer is loaded."""

    def after_backward(self, rank: int, step: int) -> dict | None:
        """Between backward and the optimizer step of step `step` (from 1), when gradients and optimizer states
        both exist; what it returns is added to that step's metrics."""

    def after_step(self, rank: int, step: int) -> None:
        """After optimizer step `step` (from 1), before it is reported or checkpointed."""


def checkpoint_id(run: str, folder_name: str) -> CheckpointId:
    """The identity a fine-tuning checkpoint folder is authenticated for (one writer rank, whatever the world)."""
    return CheckpointId.of_folder(run, folder_name, WRITER_RANKS)


@contextlib.contextmanager
def verified_checkpoint(checkpoint, run: str, key: bytes) -> Iterator[tuple[dict, dict[str, torch.Tensor]]]:
    """(trainer state, trainable weights) of a fine-tuning checkpoint, from a private copy verified against rank 0's
    authenticated hash list before either file is parsed (safetensors and JSON: nothing is unpickled)."""
    from safetensors.torch import load_file

    identity = checkpoint_id(run, os.path.basename(checkpoint.path))
    with load_verified(lambda folder: checkpoint.to_directory(str(folder)), identity, key) as folder:
        state = json.loads(Path(folder, STATE_FILE).read_text())
        weights = load_file(Path(folder, TRAINABLE_FILE))
    if state["step"] != identity.step:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds step {state['step']}, not the step "
                              f"{identity.step} its folder is named for; refusing to resume from it")
    yield state, weights


def load_trainable(transformer: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """Put checkpointed trainable weights into the transformer; every trainable parameter must be there."""
    trainable = {name for name, p in transformer.named_parameters() if p.requires_grad}
    if set(weights) != trainable:
        missing, extra = sorted(trainable - set(weights))[:3], sorted(set(weights) - trainable)[:3]
        raise CheckpointError(f"{where} does not hold this run's trainable weights (missing {missing}, unexpected "
                              f"{extra}): it was written for another method, rank or targets")
    result = transformer.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{where}: unexpected weights {result.unexpected_keys[:3]}")


def build_transformer(cfg: FinetuneConfig, model, objective: Objective) -> torch.nn.Module:
    """The pipeline's transformer in float32, made trainable as the config says (a LoRA adapter on it, or all)."""
    from vidgen.pipelines.diffusers_folder import load_component
    from vidgen.runs.finetune_lora import add_lora

    transformer = load_component(model, "transformer", torch.float32)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if cfg.method == "lora":
        add_lora(transformer, objective.recipe, cfg.lora)
    else:
        transformer.requires_grad_(True)
    return transformer.train()


def rank_batches(store: ObjectStore, latent_uri: str, batch_size: int, rank: int, world: int,
                 seed: int) -> Iterator[LatentBatch]:
    """This rank's training batches, epoch after epoch (each in a new seeded order): whole shards per rank when
    there are at least as many shards as ranks, else every `world`-th batch (so every rank always has batches)."""
    latent_set = open_latent_set(store, latent_uri)
    by_shard = len(latent_set.shards(("train",))) >= world
    count, epoch = 0, 0
    while True:
        part = (rank, world) if by_shard else None
        for batch in latent_batches(store, latent_set, batch_size, seed=seed * 100_003 + epoch, part=part):
            if by_shard or count % world == rank:
                yield batch
            count += 1
        epoch += 1


def validation_batches(store: ObjectStore, latent_uri: str, batch_size: int, limit: int) -> list[LatentBatch]:
    """The fixed held-out batches the validation loss averages over: the eval split, or (with none) the first train
    batches, in index order, the same on every rank and every run."""
    latent_set = open_latent_set(store, latent_uri)
    split = "eval" if latent_set.shards(("eval",)) else "train"
    batches = []
    for batch in latent_batches(store, latent_set, batch_size, splits=(split,)):
        batches.append(batch)
        if len(batches) == limit:
            break
    return batches


def _on(batch: LatentBatch, device: torch.device) -> tuple[Latents, object]:
    return Latents(batch.latents.values.to(device), batch.latents.grid), batch.text.to(device)


def _validate(objective: Objective, module, batches: list[LatentBatch], seed: int, device, dtype) -> float:
    """Mean validation loss over the fixed batches; every rank runs it (under ZeRO-3 a forward gathers the
    parameters from all ranks)."""
    losses = []
    with autocast(dtype, device.type):
        for batch in batches:
            latents, text = _on(batch, device)
            losses.append(validation_loss(objective, module, latents, text, seed=seed))
    return sum(losses) / len(losses)


def _trainable_state(engine, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The trainable weights, whole and float32 on the CPU, on rank 0 (ZeRO-3 gathers its partitions)."""
    import deepspeed
    import torch.distributed as dist

    named = [(name, p) for name, p in engine.module.named_parameters() if p.requires_grad]
    if zero_stage == 3:
        # a forward with no backward after it (the validation loss) leaves parameters that ZeRO-3 prefetched for a
        # backward that never came in flight, and partitioning them after the gather fails ("Cannot partition a
        # param in flight", seen on 2 workers): settle every parameter first
        engine.empty_partition_cache()
    gathered = deepspeed.zero.GatheredParameters([p for _, p in named], modifier_rank=None) \
        if zero_stage == 3 else contextlib.nullcontext()
    with gathered:
        state = {name: p.detach().float().cpu().clone() for name, p in named} if dist.get_rank() == 0 else None
    return state


def _save(engine, cfg: FinetuneConfig, state: dict, rank: int, metrics: dict, key: bytes,
          checkpoint: CheckpointId) -> None:
    """Rank 0 writes the trainable weights and the trainer state, hashed and authenticated; every rank reports."""
    import ray.train
    from ray.train import Checkpoint
    from safetensors.torch import save_file

    weights = _trainable_state(engine, cfg.zero_stage)
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(folder, TRAINABLE_FILE))
        Path(folder, STATE_FILE).write_text(json.dumps(state))
        write_rank_sums(Path(folder), 0, key, checkpoint)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                         checkpoint_dir_name=checkpoint.folder_name)


def _optimizer(transformer: torch.nn.Module, cfg: FinetuneConfig, start_step: int):
    """AdamW over the trainable weights, linear warm-up then constant, its schedule continued at `start_step`."""
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    warmup = max(cfg.warmup_steps, 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda step: min(1.0, (start_step + step + 1) / warmup))
    return params, optimizer, scheduler


def _quiet_worker_logs() -> None:
    """Ray Train logs every report of every rank at INFO; the bar and rank 0's lines say what a person needs."""
    quiet_known_warnings()
    logging.getLogger().setLevel(logging.WARNING)
    for ours in ("jobs", "vidgen", "storage"):
        logging.getLogger(ours).setLevel(logging.INFO)


def finetune_loop(config: dict, hooks: FinetuneHooks | None = None) -> None:
    """Ray Train's per-worker function. `config`: {"job": FinetuneConfig without credentials, "latents": URI}."""
    _quiet_worker_logs()
    import deepspeed
    import ray.train
    import ray.train.torch
    from ray.experimental import tqdm_ray

    from vidgen.pipelines.diffusers_folder import model_skeleton
    from vidgen.pipelines.references import verify_model

    cfg = FinetuneConfig.model_validate(config["job"])
    hooks = hooks or FinetuneHooks()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    use_torch_threads(None, cfg.cpus_per_worker)
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    dtype = autocast_dtype(cfg.precision, device.type)
    run = context.get_experiment_name()
    key = run_key(parse_uri(cfg.runs).uri, run)  # derived on this node: the key never travels through Ray
    store = ObjectStore(S3Config.model_validate(cfg.s3.public()))
    hooks.start(rank)

    model = verify_model(cfg.model)  # on this node: a registry reference is pulled and verified here
    objective = objective_of(model_skeleton(model))
    torch.manual_seed(cfg.seed)
    transformer = build_transformer(cfg, model, objective)
    state = {"step": 0, "history": [], "validation": [], "train_seconds": 0.0}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with verified_checkpoint(checkpoint, run, key) as (state, weights):
            load_trainable(transformer, weights, checkpoint.path)
        if rank == 0:
            log.info("resumed at step %d on %d workers (from a checkpoint of %d): weights restored, AdamW moments "
                     "restarted", state["step"], world, state.get("world_size", world))
    step = state["step"]
    transformer.to(device)
    params, optimizer, scheduler = _optimizer(transformer, cfg, step)
    engine, _, _, _ = deepspeed.initialize(model=transformer, model_parameters=params, optimizer=optimizer,
                                           lr_scheduler=scheduler, config=finetune_deepspeed_config(cfg),
                                           dist_init_required=False)
    batches = rank_batches(store, config["latents"], cfg.batch_size, rank, world, cfg.seed + step)
    held_out = validation_batches(store, config["latents"], cfg.batch_size, cfg.validation_batches)
    history, validation, train_seconds = state["history"], state["validation"], state["train_seconds"]
    if not validation:
        validation.append({"step": step, "val_loss": _validate(objective, engine.module, held_out,
                                                               cfg.validation_seed, device, dtype)})
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank + step)
    bar = tqdm_ray.tqdm(total=cfg.steps, desc="fine-tuning") if rank == 0 else None
    if bar is not None:
        bar.update(step)
    while step < cfg.steps:
        t0 = time.perf_counter()
        loss_sum, extra = 0.0, {}
        for _ in range(cfg.gradient_accumulation):
            latents, text = _on(next(batches), device)
            with autocast(dtype, device.type):
                loss = training_loss(objective, engine.module, latents, text, generator)
            engine.backward(loss)
            extra.update(hooks.after_backward(rank, step + 1) or {})
            engine.step()
            loss_sum += loss.item()
        step += 1
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        hooks.after_step(rank, step)
        record = {"step": step, "loss": loss_sum / cfg.gradient_accumulation, "lr": scheduler.get_last_lr()[0],
                  "step_s": seconds, "samples_per_s": cfg.batch_size * cfg.gradient_accumulation * world / seconds,
                  **accelerator_memory(device), **extra}
        done = step >= cfg.steps
        if step % cfg.validate_every == 0 or done:
            record["val_loss"] = _validate(objective, engine.module, held_out, cfg.validation_seed, device, dtype)
            validation.append({"step": step, "val_loss": record["val_loss"]})
        history.append(record)
        stopping = _told_to_stop(device)
        if step % cfg.checkpoint_every == 0 or done or stopping:
            _save(engine, cfg, {"step": step, "history": history, "validation": validation,
                                "train_seconds": train_seconds, "world_size": world}, rank, record, key,
                  CheckpointId(run, step, WRITER_RANKS))
        elif step % cfg.log_every == 0:
            ray.train.report(record)
        if bar is not None:
            bar.update(1)
            bar.set_description(f"step {step} loss {record['loss']:.4f}"
                                + (f" val {record['val_loss']:.4f}" if "val_loss" in record else ""))
        if rank == 0 and ("val_loss" in record or step % cfg.log_every == 0):
            log.info("step %d/%d loss %.4f%s", step, cfg.steps, record["loss"],
                     f" validation loss {record['val_loss']:.4f}" if "val_loss" in record else "")
        if stopping and not done:
            raise StopNotice(f"a worker was sent SIGTERM: checkpointed step {step}, the run continues from it")
    if bar is not None:
        bar.close()
