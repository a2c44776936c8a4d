"""The loop each Ray Train worker runs: build the model, wrap it in DeepSpeed, train, checkpoint, consolidate.

Everything arrives through `train_loop_config` (a `DistributedConfig` as a dict); nothing through globals. Tests
and benchmarks reach into the loop through `StepHooks` (a seam handed to `run_training`), never through the config.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from jobs._entrypoint import quiet_known_warnings
from jobs.train_config import DistributedConfig, deepspeed_config
from storage.objectstore import parse_uri
from storage.package import sha256_bytes
from storage.training_checkpoints import (
    CheckpointError,
    CheckpointId,
    load_verified,
    read_rank_sums,
    run_key,
    write_rank_sums,
)
from vidgen.diffusion import clips_to_tensor
from vidgen.perf import accelerator_memory
from vidgen.precision import autocast_dtype
from vidgen.text import TextEncoder
from vidgen.threads import use_torch_threads
from vidgen.training import (
    Batch,
    compute_loss,
    encode_batch,
    make_optimizer,
    synth_batches,
    train_autoencoder,
)

log = logging.getLogger(__name__)
DS_FOLDER, STATE_FILE, DS_TAG = "deepspeed", "trainer_state.json", "state"


class StepHooks:
    """Seams into every worker's loop for tests and benchmarks (a fault, a memory census); no-ops here.

    Subclass it in the test or benchmark itself: the instance travels to the workers with the loop.
    """

    def start(self, rank: int) -> None:
        """Before the model is built."""

    def after_backward(self, rank: int, step: int) -> dict | None:
        """Between backward and the optimizer step (gradients and optimizer states both exist); numbers returned
        are added to that step's history record."""
        return None

    def after_step(self, rank: int, step: int) -> None:
        """After optimizer step `step` (counting from 1), before it is reported or checkpointed."""


def _batches(cfg: DistributedConfig, rank: int, start_step: int) -> Iterator[Batch]:
    """This worker's batches: its Ray Data shard of the data set (epoch after epoch), or fresh synthetic clips
    seeded by rank and the step it starts at. One stream serves both stages: the shards of a streaming split
    start each epoch together, so every worker must keep reading the same one."""
    import ray.train

    if cfg.data == "synth":
        seed = int(np.random.SeedSequence([cfg.train.seed, rank, start_step]).generate_state(1)[0])
        yield from synth_batches(cfg.train.model_config_resolved(), cfg.train.batch_size, seed)
        return
    shard = ray.train.get_dataset_shard("train")
    while True:
        for batch in shard.iter_batches(batch_size=cfg.train.batch_size, batch_format="numpy", drop_last=True,
                                        prefetch_batches=2):
            yield Batch(clips_to_tensor(batch["video"]), [str(c) for c in batch["caption"]])


def _average_gradients(module: torch.nn.Module) -> None:
    """Plain data parallelism for the autoencoder stage: every worker steps with the mean gradient."""
    import torch.distributed as dist

    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def _broadcast_autoencoder(model) -> None:
    """Make rank 0's autoencoder (weights and latent scale) everyone's, exactly."""
    import torch.distributed as dist

    for tensor in [*model.autoencoder.parameters(), *model.autoencoder.buffers()]:
        dist.broadcast(tensor.data, src=0)


def _out_of_time(cfg: DistributedConfig, train_seconds: float, device: torch.device) -> bool:
    """Rank 0's clock decides for everyone (a broadcast), so all ranks stop after the same step."""
    import torch.distributed as dist

    if cfg.train.max_minutes is None:
        return False
    flag = torch.tensor([float(train_seconds >= cfg.train.max_minutes * 60)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def _save(engine, state: dict, rank: int, metrics: dict, key: bytes, checkpoint: CheckpointId) -> None:
    """Every rank writes its DeepSpeed shard and hashes it; Ray Train merges the folders into one checkpoint,
    named by its step."""
    import ray.train
    from ray.train import Checkpoint

    with tempfile.TemporaryDirectory() as folder:
        engine.save_checkpoint(os.path.join(folder, DS_FOLDER), tag=DS_TAG)
        if rank == 0:
            Path(folder, STATE_FILE).write_text(json.dumps(state))
        write_rank_sums(Path(folder), rank, key, checkpoint)
        ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder),
                         checkpoint_dir_name=checkpoint.folder_name)


def _restore(engine, run: str, world_size: int, key: bytes) -> dict | None:
    """Load the latest checkpoint from a private copy, after every file in it is verified against its rank's
    hash list, authenticated for this checkpoint of this run (DeepSpeed's loader unpickles); None on a fresh
    start."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    identity = CheckpointId.of_folder(run, os.path.basename(checkpoint.path), world_size)
    with load_verified(lambda folder: checkpoint.to_directory(str(folder)), identity, key) as folder:
        engine.load_checkpoint(os.path.join(folder, DS_FOLDER), tag=DS_TAG)
        state = json.loads(Path(folder, STATE_FILE).read_text())
    if state["step"] != identity.step:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds the state of step {state['step']}, not of the "
                              f"step {identity.step} its folder is named for; refusing to resume from it")
    return state


def _consolidated_state(engine, zero_stage: int) -> dict[str, torch.Tensor] | None:
    """The full fp32 weights on rank 0 (ZeRO-3 gathers its partitions; stages 0-2 keep whole weights)."""
    import deepspeed
    import torch.distributed as dist

    module = engine.module
    gathered = deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None) \
        if zero_stage == 3 else contextlib.nullcontext()
    with gathered:
        state = {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
    return state if dist.get_rank() == 0 else None


def _progress_bar(cfg: DistributedConfig, step: int):
    """Rank 0's bar, drawn by the driver: Ray's tqdm forwards a worker's bar to the terminal that started the run."""
    from ray.experimental import tqdm_ray

    bar = tqdm_ray.tqdm(total=cfg.train.max_steps, desc="training")
    bar.update(step)
    return bar


def _checkpoint_step(checkpoint, run: str, world_size: int, key: bytes) -> int:
    """The step a checkpoint was taken at, from its JSON state alone (nothing else is downloaded yet), read only
    after rank 0's hash list, authenticated for this checkpoint, vouches for it."""
    def read(name: str) -> bytes:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{name}") as f:
            return f.read()

    identity = CheckpointId.of_folder(run, os.path.basename(checkpoint.path), world_size)
    data = read(STATE_FILE)
    if read_rank_sums(read, 0, key, identity, checkpoint.path).get(STATE_FILE) != sha256_bytes(data):
        raise CheckpointError(f"checkpoint {checkpoint.path}: {STATE_FILE} does not match rank 0's hash list")
    return json.loads(data)["step"]


def train_loop(config: dict, hooks: StepHooks | None = None) -> None:
    """Ray Train's per-worker function."""
    quiet_known_warnings()
    # Ray Train logs every report and checkpoint of every rank at INFO (on loggers named by file path); the bar and
    # rank 0's step lines say what a person needs, so only vidgen's own INFO lines pass.
    logging.getLogger().setLevel(logging.WARNING)
    for ours in ("jobs", "vidgen", "storage"):
        logging.getLogger(ours).setLevel(logging.INFO)
    import deepspeed
    import ray.train.torch
    import torch.distributed as dist

    from jobs.train_package import write_package
    from vidgen.model import VideoDiT

    cfg = DistributedConfig.model_validate(config)
    hooks = hooks or StepHooks()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    use_torch_threads(cfg.train.torch_threads, cfg.cpus_per_worker)
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    dtype = autocast_dtype(cfg.train.precision, device.type)

    run = context.get_experiment_name()
    key = run_key(parse_uri(cfg.runs).uri, run)  # derived on this node: the key never travels through Ray
    encoder = TextEncoder()
    hooks.start(rank)
    torch.manual_seed(cfg.train.seed)
    model = VideoDiT(cfg.train.model_config_resolved())
    resuming = ray.train.get_checkpoint() is not None
    batches = _batches(cfg, rank, _checkpoint_step(ray.train.get_checkpoint(), run, world, key) if resuming else 0)
    ae_losses: list[float] = []
    if not resuming:  # a resumed run's autoencoder comes back with its checkpoint
        ae_losses = train_autoencoder(model, batches, cfg.train, dtype, reduce_gradients=_average_gradients)
        _broadcast_autoencoder(model)
        if rank == 0:
            log.info("autoencoder: %d steps, reconstruction MSE %.4f", cfg.train.autoencoder_steps,
                     float(np.mean(ae_losses[-20:])))
    model.autoencoder.eval().requires_grad_(False)
    model.to(device)
    optimizer, scheduler = make_optimizer(model, cfg.train)
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=model.diffusion_parameters(),
                                           optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg), dist_init_required=False)
    state = _restore(engine, run, world, key) or {"step": 0, "history": [], "autoencoder_losses": ae_losses,
                                        "train_seconds": 0.0}
    if resuming:
        log.info("rank %d resumed at step %d", rank, state["step"])
    step, history, train_seconds = state["step"], state["history"], state["train_seconds"]
    generator = torch.Generator().manual_seed(cfg.train.seed * 1000 + rank + step)
    clips_per_step = cfg.train.batch_size * cfg.gradient_accumulation * world
    engine.train()
    done = step >= cfg.train.max_steps or _out_of_time(cfg, train_seconds, device)
    bar = _progress_bar(cfg, step) if rank == 0 else None
    while not done:
        t0 = time.perf_counter()
        data_s, text_s, loss_sum, extra = 0.0, 0.0, 0.0, {}
        for _ in range(cfg.gradient_accumulation):
            d0 = time.perf_counter()
            batch = next(batches)  # waiting for data: what the stream did not hide
            d1 = time.perf_counter()
            batch, text = encode_batch(batch, encoder)  # the frozen text encoder (cached per caption)
            while text is None:  # every caption of the batch refused: the next one
                batch, text = encode_batch(next(batches), encoder)
            text = text.to(device)
            data_s, text_s = data_s + d1 - d0, text_s + time.perf_counter() - d1
            loss = compute_loss(engine.module, Batch(batch.x0.to(device), batch.captions), text, cfg.train.flow,
                                dtype, generator)
            engine.backward(loss)
            extra.update(hooks.after_backward(rank, step + 1) or {})
            engine.step()
            loss_sum += loss.item()
        step += 1
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        hooks.after_step(rank, step)
        history.append({"step": step, "loss": loss_sum / cfg.gradient_accumulation, "lr": scheduler.get_last_lr()[0],
                        "step_s": seconds, "data_s": data_s, "text_s": text_s,
                        "samples_per_s": clips_per_step / seconds, **accelerator_memory(device), **extra})
        metrics = dict(history[-1])
        done = step >= cfg.train.max_steps or _out_of_time(cfg, train_seconds, device)
        if step % cfg.checkpoint_every == 0 or done:
            _save(engine, {**state, "step": step, "history": history, "train_seconds": train_seconds}, rank,
                  metrics, key, CheckpointId(run, step, world))
        elif step % cfg.log_every == 0:
            ray.train.report(metrics)
        if bar is not None:
            bar.update(1)
            bar.set_description(f"step {step} loss {metrics['loss']:.4f} {metrics['samples_per_s']:.0f} clips/s")
        if rank == 0 and step % cfg.log_every == 0:
            log.info("step %d/%d loss %.4f %.0f clips/s (data wait %.0f%%)", step, cfg.train.max_steps,
                     metrics["loss"], metrics["samples_per_s"], 100 * data_s / seconds)
    if bar is not None:
        bar.close()
    weights = _consolidated_state(engine, cfg.zero_stage)
    dist.barrier()
    if rank == 0:
        write_package(cfg, weights, history, state.get("autoencoder_losses", []), world, encoder)
    dist.barrier()
