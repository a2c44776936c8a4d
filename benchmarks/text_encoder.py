"""The text encoder for a new prompt, float32 against bfloat16 (`TierConfig.text_dtype`), in one run.

  (a) milliseconds to encode one caption never seen before (the cache cannot help), one torch thread as an edge
      replica has, the two encoders alternating caption by caption; p50 of each and the ratio.
  (b) what it costs: the edge tier's model (shapes-tiny-k1) sampling the same specs and seeds with each encoder's
      embeddings, prompt accuracy on seen and paraphrased prompts.

    python benchmarks/text_encoder.py --captions 200 --clips 512

bfloat16 is fast only on CPUs with bf16 matmuls (AVX512-BF16, AMX); elsewhere `auto` stays float32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vidgen.evaluation import eval_specs
from vidgen.pipelines.load import load_pipeline
from vidgen.precision import compute_dtype
from vidgen.runs.eval_runs import evaluate_splits
from vidgen.text import TextEncoder

EDGE_MODEL = "shapes-tiny-k1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=200, help="new captions timed in (a)")
    parser.add_argument("--clips", type=int, default=512, help="clips per split in (b)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"this CPU's auto: {compute_dtype('auto', 'cpu')}")
    encoders = {"float32": TextEncoder(cache_entries=0), "bfloat16": TextEncoder(cache_entries=0, dtype="bfloat16")}
    specs = eval_specs((8, 32, 32), "paraphrase", args.captions * 4, seed=11)
    captions = list(dict.fromkeys(s.caption for s in specs))[:args.captions]
    for encoder in encoders.values():
        encoder.encode(["a warm-up caption"])
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for caption in captions:
        for name, encoder in encoders.items():
            started = time.perf_counter()
            encoder.encode([caption])
            times[name].append(time.perf_counter() - started)
    p50 = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"(a) a new caption, p50 of {len(captions)}: float32 {p50['float32']:.2f} ms, bfloat16 "
          f"{p50['bfloat16']:.2f} ms -> {p50['float32'] / p50['bfloat16']:.2f}x")
    torch.set_num_threads(2)
    for name in encoders:
        scores = evaluate_splits(load_pipeline(EDGE_MODEL, TextEncoder(dtype=name)), args.clips, seed=3,
                                 splits=("seen", "paraphrase"))
        accuracy = ", ".join(f"{split} {s['all_three']:.4f}" for split, s in scores.splits.items())
        print(f"(b) {EDGE_MODEL} with a {name} encoder, {args.clips} clips a split: prompt accuracy {accuracy}")


if __name__ == "__main__":
    main()
