"""Bulk render throughput: the whole pipeline against the raw batched sampler and a naive one-row-at-a-time loop.

In one run, with the shipped demo model, the same prompts and seeds, the same sampler steps and 2 cores:
  pipeline  `jobs.render.render`: manifest -> Ray Data -> 1 actor (model loaded once) -> sample in batches
            -> H.264 encode -> conditional put into a folder -> ledger (actor start-up and model load included)
  sampler   `vidgen.diffusion.sample` alone on the same batches in this process: no I/O, no encode, no Ray
  naive     one row at a time, loading the model for each row (what scripts that call a generate() per prompt do)

    python benchmarks/render.py --rows 64 --batch 8
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from cluster.connection import connect_ray
from jobs.render import RenderConfig, render
from vidgen.diffusion import sample
from vidgen.precision import autocast_dtype
from vidgen.runtime.eval_runs import SAMPLE_PROMPTS
from vidgen.runtime.packages import load_model
from vidgen.runtime.references import resolve_model
from vidgen.text import TextEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="sampler steps per clip")
    parser.add_argument("--naive-rows", type=int, default=16, help="rows timed for the naive loop (it is slow)")
    parser.add_argument("--actors", type=int, default=2, help="render actors; actors x cpus = the 2 cores")
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    prompts = [SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)] for i in range(args.rows)]
    seeds = list(range(args.rows))
    folder = resolve_model(None)
    dtype = autocast_dtype("auto")

    connect_ray(None, num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "manifest.jsonl"
        manifest.write_text("".join(json.dumps({"id": f"r{i:04d}", "prompt": p, "seed": s}) + "\n"
                                    for i, (p, s) in enumerate(zip(prompts, seeds, strict=True))))
        arrivals: list[tuple[float, int]] = []  # (time, rows) as batches come back to the driver
        pipeline_start = time.perf_counter()
        summary = render(RenderConfig(manifest=str(manifest), out=str(Path(tmp) / "out"), batch_size=args.batch,
                                      steps=args.steps, actors=args.actors, cpus_per_actor=args.cpus_per_actor),
                         on_batch=lambda results, left: arrivals.append((time.perf_counter(), len(results))))
        pipeline_s = time.perf_counter() - pipeline_start
        assert summary["videos"] == args.rows, summary

    model, encoder = load_model(folder), TextEncoder()
    start = time.perf_counter()
    for i in range(0, args.rows, args.batch):
        sample(model, encoder.encode(prompts[i:i + args.batch]), seeds[i:i + args.batch], args.steps, 3.0, dtype)
    sampler_s = time.perf_counter() - start

    start = time.perf_counter()
    for i in range(args.naive_rows):
        one = load_model(folder)
        sample(one, encoder.encode([prompts[i]]), [seeds[i]], args.steps, 3.0, dtype)
    naive_rate = args.naive_rows / (time.perf_counter() - start)

    pipeline_rate, sampler_rate = args.rows / pipeline_s, args.rows / sampler_s
    steady_rate = sum(n for _, n in arrivals[1:]) / (arrivals[-1][0] - arrivals[0][0])
    print(f"{args.rows} rows, batch {args.batch}, {args.steps} sampler steps, shipped demo model; pipeline: "
          f"{args.actors} actors x {args.cpus_per_actor} CPUs; sampler and naive: one process, 2 threads")
    print(f"{'path':<10}{'clips/s':>10}")
    for name, rate in (("pipeline", pipeline_rate), ("sampler", sampler_rate), ("naive", naive_rate)):
        print(f"{name:<10}{rate:>10.2f}")
    print(f"{'steady':<10}{steady_rate:>10.2f}   pipeline after its first batch (start-up left out)")
    tail_s = pipeline_start + pipeline_s - arrivals[-1][0]
    print(f"start-up: {arrivals[0][0] - pipeline_start:.1f} s to the first batch (Ray Data, actors, model and text "
          f"encoder load, first batch); ledger and run.json after the last: {tail_s:.1f} s")
    print(f"ratio pipeline / sampler: {pipeline_rate / sampler_rate:.3f} end to end, "
          f"{steady_rate / sampler_rate:.3f} steady (goal >= 0.90)")
    print(f"ratio pipeline / naive:   {pipeline_rate / naive_rate:.2f} end to end, {steady_rate / naive_rate:.2f} "
          "steady (goal >= 3 at batch 8)")


if __name__ == "__main__":
    main()
