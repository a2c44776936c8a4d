"""Which int8 path for the edge model: torchao (maintained) or torch.ao's deprecated quantize_dynamic, vs fp32.

In one run, on the shipped demo model, one torch thread, one clip at a time at the edge tier's step count:
seconds per clip (ratio to fp32), linear-weight bytes, how far the clips move from fp32 (mean absolute difference
in grey levels), and prompt accuracy on evaluation prompts of seen compositions.

    python benchmarks/int8.py --clips 48 --steps 8
"""

from __future__ import annotations

import argparse
import copy
import statistics
import warnings

import numpy as np
import torch

from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.diffusion import SamplerConfig
from vidgen.evaluation import eval_specs, score
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.packages import capabilities, load_model, read_config
from vidgen.pipelines.references import resolve_model
from vidgen.pipelines.vidgen_package import VidgenPipeline
from vidgen.quantize import linear_weight_bytes, quantize_int8
from vidgen.runs.eval_runs import generate_specs
from vidgen.text import TextEncoder


def variants(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    import torchao.quantization as tq

    dynamic_act = copy.deepcopy(model)
    tq.quantize_(dynamic_act, tq.Int8DynamicActivationInt8WeightConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "torch.ao.quantization is deprecated": the point of the comparison
        legacy = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    return {"fp32": model, "torchao int8 weight-only (chosen)": quantize_int8(model),
            "torchao int8 dynamic activations": dynamic_act, "torch.ao quantize_dynamic (deprecated)": legacy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=48, help="evaluation clips per variant")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps (the edge tier's)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds, alternating the variants")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = resolve_model("shapes-tiny")
    model = load_model(folder)
    guidance = capabilities(read_config(folder)).guidance
    encoder = TextEncoder()
    specs = eval_specs((model.config.frames, model.config.height, model.config.width), "seen", args.clips, seed=0)
    sampler = SamplerConfig(steps=args.steps, guidance=guidance)
    models = variants(model)
    pipelines = {name: VidgenPipeline.from_model(m, sampler, encoder, name, PipelineOptions(dtype="float32"))
                 for name, m in models.items()}
    one = [resolve_clip(ClipRequest(prompt=specs[0].caption, seed=seed), pipelines["fp32"].capabilities)[0]
           for seed in range(4)]
    times: dict[str, list[float]] = {name: [] for name in models}
    for pipeline in pipelines.values():
        pipeline.generate(one[:1])  # warm-up
    for _ in range(args.repeats):
        for name, pipeline in pipelines.items():
            times[name].append(sum(pipeline.generate([clip]).timings["sample_s"] for clip in one) / len(one))
    clips = {name: generate_specs(pipeline, specs).frames for name, pipeline in pipelines.items()}
    base = statistics.median(times["fp32"])
    print(f"{args.steps} steps, 1 thread, {args.clips} evaluation clips per variant")
    print(f"{'variant':42s} {'ms/clip':>8s} {'vs fp32':>8s} {'weight MB':>10s} {'|diff|':>7s} {'accuracy':>9s}")
    for name, m in models.items():
        t = statistics.median(times[name])
        diff = np.abs(clips[name].astype(np.float32) - clips["fp32"].astype(np.float32)).mean()
        accuracy = score(clips[name], specs).all_three
        # quantize_dynamic packs its weights into opaque objects: no tensor to count
        weight = f"{linear_weight_bytes(m) / 1e6:.2f}" if "torch.ao" not in name else "packed"
        print(f"{name:42s} {1000 * t:8.1f} {t / base:7.2f}x {weight:>10s} {diff:7.2f} {accuracy:9.2f}")


if __name__ == "__main__":
    main()
