"""bf16 autocast vs fp32 for the two kinds of training step of `tiny`, measured side by side in one run.

The transformer step (64 tokens x 192 wide: small matmuls) and the autoencoder step (convolutions over
32x32 frames) respond differently to bf16 on CPUs with avx512_bf16; this prints clips/s for both dtypes
and the bf16/fp32 ratio of each, alternating the two dtypes to spread machine noise evenly.

    python benchmarks/step_precision.py
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidgen.model import PRESETS, VideoDiT
from vidgen.text import TextEmbedding
from vidgen.training import Batch, TrainConfig, compute_loss


def _time_steps(step, repeats: int) -> float:
    step()  # warm-up (oneDNN primitive creation)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    model = VideoDiT(cfg)
    flow = TrainConfig().flow
    b = args.batch
    x = torch.rand(b, 3, cfg.frames, cfg.height, cfg.width) * 2 - 1
    text = TextEmbedding(torch.randn(b, 16, 384), torch.ones(b, 16, dtype=torch.bool), torch.randn(b, 384))
    dit_opt = torch.optim.AdamW(model.diffusion_parameters(), lr=1e-4)
    ae_opt = torch.optim.AdamW(model.autoencoder.parameters(), lr=1e-4)

    def dit_step(dtype):
        loss = compute_loss(model, Batch(x, []), text, flow, dtype)
        dit_opt.zero_grad()
        loss.backward()
        dit_opt.step()

    def ae_step(dtype):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
            loss = model.autoencoder.reconstruction_loss(x)
        ae_opt.zero_grad()
        loss.backward()
        ae_opt.step()

    for name, step in (("transformer", dit_step), ("autoencoder", ae_step)):
        model.autoencoder.requires_grad_(name == "autoencoder")
        times = {"fp32": [], "bf16": []}
        for _ in range(args.rounds):
            for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                times[label].append(_time_steps(lambda d=dtype, f=step: f(d), args.repeats))
        fp32, bf16 = statistics.median(times["fp32"]), statistics.median(times["bf16"])
        print(f"{name:<12} fp32 {b / fp32:7.1f} clips/s   bf16 {b / bf16:7.1f} clips/s   bf16/fp32 {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
