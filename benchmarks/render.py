"""Bulk render throughput: the whole pipeline against the raw batched sampler and a naive one-row-at-a-time loop.

In one run, with the same prompts and seeds, the same sampler steps and 2 cores:
  pipeline  `jobs.render.render`: manifest -> Ray Data -> actors (model loaded once each) -> sample in batches
            -> H.264 encode -> conditional put into a folder -> ledger (actor start-up and model load included)
  sampler   the model alone on the same batches in this process: no I/O, no encode, no Ray
            (vidgen: `vidgen.diffusion.sample`; diffusers: the pipeline object called directly, one
            torch.Generator per clip, as its own docs show)
  naive     one row at a time, loading the model for each row (what scripts that call a generate() per prompt do)

`--backend vidgen` renders with the shipped demo model; `--backend diffusers` with a tiny random-weight Wan
pipeline saved by examples/tiny_pipelines.py (9x32x32 clips). Every path runs at `--dtype` (default auto, as vidgen
resolves it: bfloat16 on CPUs with bf16 matmuls, float32 elsewhere; the diffusers baselines load in the same dtype).

`--whole-command N` (diffusers) times what a user waits for instead, N rounds alternating, each a fresh process:
`vidgen render` (its own local Ray, every import, the ledger and report) against benchmarks/diffusers_direct.py
(import diffusers, load the pipeline, call it over the same manifest).

    python benchmarks/render.py --rows 64 --batch 8 [--backend diffusers]
    python benchmarks/render.py --backend diffusers --rows 256 --steps 4 --whole-command 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from jobs.connection import connect_ray
from jobs.render import RenderConfig, render
from vidgen.diffusion import sample
from vidgen.pipelines.packages import load_model
from vidgen.pipelines.references import resolve_model
from vidgen.precision import autocast_dtype, dtype_name
from vidgen.runs.eval_runs import SAMPLE_PROMPTS
from vidgen.text import TextEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12, help="sampler steps per clip")
    parser.add_argument("--naive-rows", type=int, default=16, help="rows timed for the naive loop (it is slow)")
    parser.add_argument("--actors", type=int, default=2, help="render actors; actors x cpus = the 2 cores")
    parser.add_argument("--cpus-per-actor", type=int, default=1)
    parser.add_argument("--backend", choices=("vidgen", "diffusers"), default="vidgen")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="precision of every path (vidgen.precision: auto is bfloat16 on CPUs with bf16 matmuls)")
    parser.add_argument("--whole-command", type=int, default=0, metavar="ROUNDS",
                        help="diffusers: time `vidgen render` and the direct script as whole fresh processes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    prompts = [SAMPLE_PROMPTS[i % len(SAMPLE_PROMPTS)] for i in range(args.rows)]
    seeds = list(range(args.rows))
    if args.whole_command:
        if args.backend != "diffusers":
            parser.error("--whole-command compares against a diffusers pipeline: add --backend diffusers")
        whole_command(prompts, seeds, args)
        return

    connect_ray(None, num_cpus=2, dashboard=False)  # as render() would start it
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend == "diffusers":
            folder = tiny_wan(Path(tmp) / "tiny-wan")
            shape, baselines = {"frames": 9, "height": 32, "width": 32}, diffusers_baselines
        else:
            folder, shape, baselines = resolve_model(None), {}, vidgen_baselines
        manifest = write_manifest(Path(tmp) / "manifest.jsonl", prompts, seeds)
        arrivals: list[tuple[float, int]] = []  # (time, rows) as batches come back to the driver
        pipeline_start = time.perf_counter()
        summary = render(RenderConfig(manifest=str(manifest), model=str(folder), out=str(Path(tmp) / "out"),
                                      batch_size=args.batch, steps=args.steps, actors=args.actors,
                                      pipeline={"dtype": args.dtype},
                                      cpus_per_actor=args.cpus_per_actor, **shape),
                         on_batch=lambda results, left: arrivals.append((time.perf_counter(), len(results))))
        pipeline_s = time.perf_counter() - pipeline_start
        assert summary["videos"] == args.rows, summary
        sampler_s, naive_rate = baselines(folder, prompts, seeds, args)

    pipeline_rate, sampler_rate = args.rows / pipeline_s, args.rows / sampler_s
    steady_rate = sum(n for _, n in arrivals[1:]) / (arrivals[-1][0] - arrivals[0][0])
    model = "tiny Wan pipeline (diffusers)" if args.backend == "diffusers" else "shipped demo model"
    print(f"{args.rows} rows, batch {args.batch}, {args.steps} sampler steps, {model}; pipeline: "
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


def write_manifest(path: Path, prompts: list[str], seeds: list[int]) -> Path:
    path.write_text("".join(json.dumps({"id": f"r{i:04d}", "prompt": p, "seed": s}) + "\n"
                            for i, (p, s) in enumerate(zip(prompts, seeds, strict=True))))
    return path


def whole_command(prompts: list[str], seeds: list[int], args) -> None:
    """Rounds alternating `vidgen render` and the direct script, each a fresh process timed from outside."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_wan(Path(tmp) / "tiny-wan")
        manifest = write_manifest(Path(tmp) / "manifest.jsonl", prompts, seeds)
        direct = [sys.executable, str(Path(__file__).with_name("diffusers_direct.py")), str(manifest), str(folder),
                  "--steps", str(args.steps), "--batch", str(args.batch), "--dtype", dtype_name(args.dtype)]
        times: dict[str, list[float]] = {"vidgen render": [], "direct": []}
        for n in range(args.whole_command):
            ours = [sys.executable, "-m", "vidgen.cli", "render", str(manifest), "--model", str(folder),
                    "--out", str(Path(tmp) / f"out{n}"), "--steps", str(args.steps), "--frames", "9",
                    "--height", "32", "--width", "32", "--batch-size", str(args.batch), "--actors", str(args.actors),
                    "--set", f"cpus_per_actor={args.cpus_per_actor}", "--set", f"pipeline.dtype={args.dtype}"]
            for name, command in (("vidgen render", ours), ("direct", direct)):
                start = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - start)
                print(f"  round {n + 1} {name:<14}{times[name][-1]:7.2f} s", flush=True)
    ours_s, direct_s = statistics.median(times["vidgen render"]), statistics.median(times["direct"])
    print(f"{args.rows} rows, batch {args.batch}, {args.steps} sampler steps, tiny Wan pipeline; whole commands, "
          f"median of {args.whole_command}: vidgen render {ours_s:.2f} s ({args.actors} actors, its own local Ray), "
          f"direct script {direct_s:.2f} s (one process, 2 threads)")
    print(f"ratio direct / vidgen render (throughput, whole command): {direct_s / ours_s:.3f}")


def tiny_wan(folder: Path) -> Path:
    """A tiny random-weight Wan pipeline folder, saved by the example script a user would run."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from tiny_pipelines import save_tiny_pipeline

    return save_tiny_pipeline("wan", folder)


def vidgen_baselines(folder: Path, prompts: list[str], seeds: list[int], args) -> tuple[float, float]:
    """(seconds for the batched sampler over every row, naive clips/s) with a vidgen package."""
    dtype = autocast_dtype(args.dtype)
    model, encoder = load_model(folder), TextEncoder()
    start = time.perf_counter()
    for i in range(0, args.rows, args.batch):
        sample(model, encoder.encode(prompts[i:i + args.batch]), seeds[i:i + args.batch], args.steps, 3.0, dtype)
    sampler_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.naive_rows):
        one = load_model(folder)
        sample(one, encoder.encode([prompts[i]]), [seeds[i]], args.steps, 3.0, dtype)
    return sampler_s, args.naive_rows / (time.perf_counter() - start)


def diffusers_baselines(folder: Path, prompts: list[str], seeds: list[int], args) -> tuple[float, float]:
    """The same with the diffusers pipeline object called directly, as its documentation calls it."""
    from diffusers import DiffusionPipeline
    from diffusers_direct import call_batches

    dtype = getattr(torch, dtype_name(args.dtype))
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    call_batches(pipe, prompts, seeds, args.steps, args.batch)
    sampler_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(args.naive_rows):
        one = DiffusionPipeline.from_pretrained(folder, dtype=dtype)
        one.set_progress_bar_config(disable=True)
        call_batches(one, [prompts[i]], [seeds[i]], args.steps, 1)
    return sampler_s, args.naive_rows / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
