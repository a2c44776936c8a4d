"""Time to accuracy and MFU of the `tiny` preset, trained from scratch in this process.

Prints prompt accuracy (seen and held-out compositions, per attribute) at fixed minutes of training, the
minutes until seen all-three accuracy first reaches the target, and MFU: achieved model FLOP/s over the
transformer steps (3x forward FLOPs per clip x clips / step seconds; data time is reported apart) divided by
the large-matmul FLOP/s of the dtype training used, measured in this run.

    python benchmarks/train_tiny.py --json                       # the 15-minute curve
    python benchmarks/train_tiny.py --minutes 2 --eval-every 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from vidgen.config import load_config
from vidgen.perf import matmul_flops_per_s
from vidgen.precision import autocast_dtype
from vidgen.runs.local_training import world_evaluation
from vidgen.text import TextEncoder
from vidgen.training import TrainConfig, train_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget")
    parser.add_argument("--eval-every", type=float, default=2.5, help="minutes between evaluations")
    parser.add_argument("--eval-clips", type=int, default=96, help="clips per split per evaluation")
    parser.add_argument("--target", type=float, default=0.9, help="seen all-three accuracy to time")
    parser.add_argument("--set", action="append", default=[], help="config override, e.g. lr=5e-4")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg = load_config(TrainConfig, "tiny", [f"max_minutes={args.minutes}", f"eval_every_minutes={args.eval_every}",
                                            f"eval_clips={args.eval_clips}", *args.set])
    dtype = autocast_dtype(cfg.precision)
    peak = matmul_flops_per_s(dtype)
    encoder = TextEncoder()
    result = train_local(cfg, encoder, evaluate=world_evaluation(cfg, encoder))
    seconds = sum(h["data_s"] + h["step_s"] for h in result.history)
    step_seconds = sum(h["step_s"] for h in result.history)
    clips = result.steps * cfg.batch_size
    mfu = result.mfu(cfg.batch_size, peak)
    reached = next((e["minutes"] for e in result.evals if e["seen"]["all_three"] >= args.target), None)
    report = {
        "preset": cfg.preset,
        "dtype": str(dtype or torch.float32),
        "threads": torch.get_num_threads(),
        "params": result.model.num_params(),
        "steps": result.steps,
        "clips_per_s": clips / seconds,
        "data_fraction": 1 - step_seconds / seconds,
        "matmul_tflops": peak / 1e12,
        "model_tflops": mfu * peak / 1e12,
        "mfu": mfu,
        f"minutes_to_{args.target:.2f}": reached,
        "curve": [{"minutes": e["minutes"], "step": e["step"], "seen": e["seen"], "heldout": e["heldout"]}
                  for e in result.evals],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{report['clips_per_s']:.1f} clips/s, MFU {report['mfu']:.3f} "
          f"({report['model_tflops']:.3f} / {report['matmul_tflops']:.3f} TFLOP/s, {report['dtype']})")
    for e in report["curve"]:
        s, h = e["seen"], e["heldout"]
        print(f"{e['minutes']:5.1f} min  seen {s['all_three']:.2f} (c {s['colour']:.2f} s {s['shape']:.2f} "
              f"d {s['direction']:.2f})  held-out {h['all_three']:.2f}")
    print(f"minutes to {args.target:.0%}: {reached}")


if __name__ == "__main__":
    main()
