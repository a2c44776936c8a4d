"""A diffusers pipeline called directly over a manifest, as a user's own script would: import diffusers, load the
pipeline once, call it on batches of rows with one torch.Generator per clip (its documentation's way), keep the
frames as arrays. `benchmarks/render.py` uses `call_batches` as its in-process baseline and runs this file as a
fresh process for its whole-command comparison.

    python benchmarks/diffusers_direct.py MANIFEST.jsonl PIPELINE_FOLDER --steps 4 --batch 8 [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json

import torch

SHAPE = {"num_frames": 9, "height": 32, "width": 32}  # examples/tiny_pipelines.py's clips


def call_batches(pipe, prompts: list[str], seeds: list[int], steps: int, batch: int) -> None:
    """Every row through the pipeline, `batch` rows a call."""
    for i in range(0, len(prompts), batch):
        pipe(prompt=prompts[i:i + batch], num_inference_steps=steps, output_type="np",
             generator=[torch.Generator().manual_seed(s) for s in seeds[i:i + batch]], **SHAPE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest")
    parser.add_argument("folder")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="the weights' dtype")
    args = parser.parse_args()
    from diffusers import DiffusionPipeline

    torch.set_num_threads(args.threads)
    with open(args.manifest) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    pipe = DiffusionPipeline.from_pretrained(args.folder, dtype=getattr(torch, args.dtype))
    pipe.set_progress_bar_config(disable=True)
    call_batches(pipe, [r["prompt"] for r in rows], [r["seed"] for r in rows], args.steps, args.batch)


if __name__ == "__main__":
    main()
