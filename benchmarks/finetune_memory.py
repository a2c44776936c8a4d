"""Per-worker memory of fine-tuning under ZeRO 0/1/2/3 against DeepSpeed's model-state formula, and LoRA's against
full fine-tuning, side by side in one run.

`vidgen finetune`'s own loop (jobs/_finetune_worker.py) on 2 Ray Train workers, fp32 weights + AdamW, on a Wan
transformer widened until model states dominate (width 512, 8 blocks, ~40M parameters; clips 5x32x32 so
activations are small). Measured by a census of live tensor storages in each worker between backward and the
optimizer step (parameters, gradients and optimizer states all exist only then), minus the census before the
transformer was loaded, the largest over steps 2-3 (AdamW's moments exist from the first step on). DeepSpeed's
gradient buckets are set to their minimum (100k elements) so that the census counts model states, not buffers.

Bytes per trained parameter Ψ on N workers, fp32 training (DeepSpeed keeps an fp32 master partition from stage 1 on,
as it would for mixed precision, so its counts are the ZeRO paper's with K = 12):
    ZeRO-0  4 + 4 + 8        weights, gradients, AdamW m and v, all replicated
    ZeRO-1  4 + (4+4+8)/N    gradients replicated but reduced into partitions; master weights and moments sharded
    ZeRO-2  4 + (4+4+8)/N    gradients partitioned too
    ZeRO-3  (4+4+4+8)/N      weights partitioned as well
LoRA: the frozen base weights (4 bytes a parameter, replicated below ZeRO-3) plus the formula on the adapter alone.

    python benchmarks/finetune_memory.py            # ~5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from finetune import save_pipeline  # noqa: E402
from train_scaling import live_tensor_mb  # noqa: E402

from jobs._finetune_worker import FinetuneHooks  # noqa: E402

WORKERS = 2
BYTES_PER_PARAMETER = {0: lambda n: 16, 1: lambda n: 4 + 16 / n, 2: lambda n: 4 + 16 / n, 3: lambda n: 20 / n}


class MemoryCensus(FinetuneHooks):
    """Live tensor MiB between backward and the optimizer step, over what the worker held before the model."""

    def start(self, rank: int) -> None:
        self.baseline_mb = live_tensor_mb()

    def after_backward(self, rank: int, step: int) -> dict:
        return {"tensor_mb": live_tensor_mb() - self.baseline_mb}


def trained_parameters(model: Path, rank: int | None) -> int:
    """Trainable parameters of the model's transformer with a LoRA of `rank` (None: all of them, full)."""
    from diffusers import WanTransformer3DModel

    from vidgen.runs.finetune_lora import LoraSettings, add_lora
    from vidgen.runs.finetune_recipes import recipe_for

    transformer = WanTransformer3DModel.from_pretrained(model / "transformer")
    if rank is None:
        return sum(p.numel() for p in transformer.parameters())
    add_lora(transformer, recipe_for("WanPipeline"), LoraSettings(rank=rank, alpha=rank))
    return sum(p.numel() for p in transformer.parameters() if p.requires_grad)


def measured_mb(summary: dict) -> float:
    with open(Path(summary["package"]) / "metrics.csv") as f:
        return max(float(row["tensor_mb"]) for row in csv.DictReader(f) if int(row["step"]) >= 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lora-rank", type=int, default=16)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    from examples.test_videos import make_corpus
    from jobs.finetune import FinetuneConfig, run_finetune
    from jobs.ingest import IngestConfig, ingest

    work = Path(tempfile.mkdtemp(prefix="vidgen-bench-finetune-memory-"))
    model = save_pipeline(work / "wan", layers=8, heads=8, head_dim=64, ffn=2048)  # width 512: ~36M parameters
    psi = trained_parameters(model, rank=None)
    psi_lora = trained_parameters(model, args.lora_rank)
    src = make_corpus(work / "videos", real=False)
    ray.init(address="local", num_cpus=WORKERS + 1, include_dashboard=False, logging_level="warning",
             log_to_driver=False)
    data = str(work / "footage")
    ingest(IngestConfig(src=str(src), captions=str(src / "captions.csv"), out=data, frames=5, height=32, width=32,
                        eval_fraction=0.3, seed=1))

    def run(method: str, stage: int) -> float:
        cfg = FinetuneConfig(model=str(model), data=data, runs=str(work / "runs"), steps=3, workers=WORKERS,
                             zero_stage=stage, method=method, lora={"rank": args.lora_rank, "alpha": args.lora_rank},
                             validate_every=10**6, validation_batches=1, checkpoint_every=10**6, batch_size=1,
                             bucket_elements=100_000, out=str(work / f"out-{method}-{stage}"))
        return measured_mb(run_finetune(cfg, hooks=MemoryCensus()))

    mib = 2**20
    print(f"Wan transformer width 512 x 8 blocks: Ψ = {psi / 1e6:.1f}M parameters; LoRA rank {args.lora_rank}: "
          f"{psi_lora / 1e6:.2f}M; fp32 + AdamW, {WORKERS} workers, MiB of live tensors per worker")
    print(f"  {'':<16}{'measured':>10}{'formula':>10}{'ratio':>8}")
    full = {}
    for stage in range(4):
        formula = BYTES_PER_PARAMETER[stage](WORKERS) * psi / mib
        full[stage] = run("full", stage)
        print(f"  {f'full, ZeRO-{stage}':<16}{full[stage]:>10.0f}{formula:>10.0f}{full[stage] / formula:>8.2f}")
    formula = (4 * psi + BYTES_PER_PARAMETER[2](WORKERS) * psi_lora) / mib  # frozen base + the adapter's states
    lora = run("lora", 2)
    print(f"  {'LoRA, ZeRO-2':<16}{lora:>10.0f}{formula:>10.0f}{lora / formula:>8.2f}")
    print(f"  LoRA holds {lora / full[2]:.2f}x what full fine-tuning holds at ZeRO-2 ({lora / full[3]:.2f}x at ZeRO-3)")
    ray.shutdown()


if __name__ == "__main__":
    main()
