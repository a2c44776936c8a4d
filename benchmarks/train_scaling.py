"""Ray Train + DeepSpeed against the plain loop, ZeRO memory per worker, and the share of time spent waiting for data.

In one run, on the same model config and data:
  (a) throughput  clips/s of the Ray Train + DeepSpeed job at 1 worker vs the single-process loop of
                  `vidgen.training.train_local` (tiny, fp32, synthetic clips, batch 32, the same threads)
  (b) memory      live tensor memory per worker between backward and optimizer step, when params, grads and
                  optimizer states all exist (a census of tensor storages; activations are freed by then), at
                  ZeRO 0, 1, 2, 3 with 2 workers, next to the 16Ψ -> 16Ψ/N formula, on a widened tiny model
                  (dim 512, depth 8) so that model states dominate
  (c) data wait   share of step time spent waiting for the next batch when 2 workers stream tiny clips from a
                  data set on a loopback S3 endpoint through Ray Data

    python benchmarks/train_scaling.py                 # all three, ~6 minutes on 2 cores
    python benchmarks/train_scaling.py --parts a       # one part
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import tempfile
import uuid
from pathlib import Path

from cluster.launcher import free_ports
from jobs._train_worker import StepHooks
from jobs.connection import connect_ray
from jobs.train import run_training
from jobs.train_config import DistributedConfig
from vidgen.diffusion import SamplerConfig
from vidgen.model import VideoDiT
from vidgen.text import TextEncoder
from vidgen.training import TrainConfig, train_local

WARMUP = 5  # steps left out of medians: first steps pay for allocation and pipeline start


def _train(steps: int, batch: int, model: dict | None = None, threads: int = 2, ae_steps: int = 20) -> TrainConfig:
    return TrainConfig(model=model or {}, max_steps=steps, batch_size=batch, warmup_steps=5,
                       autoencoder_steps=ae_steps, eval_clips=2, sampler=SamplerConfig(steps=2), torch_threads=threads,
                       precision="float32")


def _history(run_dir: str) -> list[dict]:
    with open(Path(run_dir.removeprefix("file://")) / "model" / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def throughput(steps: int, runs: str, zero_stage: int) -> None:
    cfg = _train(steps, 32)
    local = train_local(cfg, TextEncoder())
    local_rate = statistics.median(h["samples_per_s"] for h in local.history[WARMUP:])
    summary = run_training(DistributedConfig(train=cfg, workers=1, cpus_per_worker=2, zero_stage=zero_stage,
                                             runs=runs, checkpoint_every=steps))
    ray_history = _history(summary["run_dir"])[WARMUP:]
    ray_rate = statistics.median(h["samples_per_s"] for h in ray_history)
    # where the time goes: the local loop's step_s is the train step alone; the job's includes data and text
    local_compute = statistics.median(h["step_s"] for h in local.history[WARMUP:])
    ray_compute = statistics.median(h["step_s"] - h["data_s"] - h["text_s"] for h in ray_history)
    print(f"(a) tiny, batch 32, fp32, 2 threads, {steps} steps, median clips/s after {WARMUP} steps")
    print(f"    local loop {local_rate:8.1f}   Ray Train + DeepSpeed ZeRO-{zero_stage}, 1 worker {ray_rate:8.1f}   "
          f"ratio {ray_rate / local_rate:.3f} (goal >= 0.95)")
    print(f"    train step alone (no data, no text encoder): local {local_compute:.3f} s, job {ray_compute:.3f} s, "
          f"ratio {local_compute / ray_compute:.3f}")


def live_tensor_mb() -> float:
    """MB of the distinct tensor storages alive in this process: params, grads, optimizer states, buffers."""
    import gc

    import torch

    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and not obj.is_meta:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values()) / 2**20


class MemoryCensus(StepHooks):
    """Live tensor MB between backward and the optimizer step (gradients and optimizer states both exist only
    then), over what the worker held before building the model (a census of tensor storages; slow)."""

    def start(self, rank: int) -> None:
        self.baseline_mb = live_tensor_mb()

    def after_backward(self, rank: int, step: int) -> dict:
        return {"tensor_mb": live_tensor_mb() - self.baseline_mb}


def memory(runs: str) -> None:
    wide = {"dim": 512, "depth": 8, "heads": 8}
    psi = sum(p.numel() for p in VideoDiT(_train(1, 1, wide).model_config_resolved()).diffusion_parameters())
    print(f"(b) tiny widened to dim 512 x depth 8: Ψ = {psi / 1e6:.1f}M trained parameters, fp32 + AdamW, "
          "2 workers; MB per worker")
    print(f"    {'ZeRO':<6}{'measured':>10}{'16Ψ-paper':>11}{'fp32-DS':>9}   bytes per parameter: paper | fp32-DS")
    # The paper's counts (K=8 for fp32 Adam m, v) and what DeepSpeed keeps in fp32 training: from stage 1 on it
    # also holds an fp32 master copy of its partition (K=12), as it would for mixed precision.
    formulas = {0: (16, 16, "4+4+8 | same"), 1: (4 + 4 + 8 / 2, 4 + 16 / 2, "4+4+8/N | 4+(4+4+8)/N"),
                2: (4 + 12 / 2, 4 + 16 / 2, "4+(4+8)/N | 4+(4+4+8)/N"), 3: (16 / 2, 20 / 2, "16/N | 20/N")}
    for stage in range(4):
        summary = run_training(DistributedConfig(train=_train(3, 2, wide, threads=1, ae_steps=2), workers=2,
                                                 zero_stage=stage, runs=runs, checkpoint_every=100),
                               hooks=MemoryCensus())
        measured = max(h["tensor_mb"] for h in _history(summary["run_dir"]))
        paper, deepspeed, text = formulas[stage]
        print(f"    {stage:<6}{measured:>10.0f}{paper * psi / 2**20:>11.0f}{deepspeed * psi / 2**20:>9.0f}   {text}")


def data_wait(steps: int, runs: str) -> None:
    from jobs.prepare import PrepareConfig, prepare
    from storage.loopback import LoopbackS3

    with LoopbackS3(free_ports(1)[0]) as s3:
        uri = f"s3://bench-{uuid.uuid4().hex[:8]}/shapes"
        prepare(PrepareConfig(n=2000, out=uri, s3=s3.config))
        summary = run_training(DistributedConfig(train=_train(steps, 16, threads=1), workers=2, zero_stage=2,
                                                 data=uri, runs=runs, checkpoint_every=steps, s3=s3.config))
    history = _history(summary["run_dir"])[WARMUP:]
    step_s = sum(h["step_s"] for h in history)
    share, text_share = sum(h["data_s"] for h in history) / step_s, sum(h["text_s"] for h in history) / step_s
    print(f"(c) tiny, 2 workers x batch 16, streaming {uri} from loopback S3 through Ray Data, {steps} steps")
    print(f"    data wait {100 * share:.1f}% of step time after {WARMUP} steps (goal < 5%); text encoder "
          f"{100 * text_share:.1f}% (captions not seen before); median step "
          f"{statistics.median(h['step_s'] for h in history):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="abc", help="which of a, b, c to run")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps in (a) and (c)")
    parser.add_argument("--zero", type=int, default=2, help="ZeRO stage of the 1-worker job in (a)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    connect_ray(None, num_cpus=3)
    with tempfile.TemporaryDirectory() as runs:
        if "a" in args.parts:
            throughput(args.steps, runs, args.zero)
        if "b" in args.parts:
            memory(runs)
        if "c" in args.parts:
            data_wait(args.steps, runs)


if __name__ == "__main__":
    main()
