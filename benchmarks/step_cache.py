"""Step caching: speed per clip against quality, for a sweep of thresholds, beside the uncached model in one run.

vidgen (the shapes cloud tier model, shipped `shapes-tiny`, 24 guided steps): per threshold of the first-block
cache, seconds per clip (batches of 8, thresholds taken in turn each round so load drifts hit them alike; median
of the rounds), prompt accuracy (all three attributes, mean of the seen, held-out and paraphrased splits, as
`vidgen eval` scores it: `vidgen.runs.eval_runs.evaluate_splits`) and FVD-vidgen against the world's own clips
(`perceptual_eval`), with the steps computed in full and skipped. The goal (issue 28): the threshold that keeps
accuracy within 1 point and FVD-vidgen within 10% of uncached runs >= 1.6x faster per clip. The curve is plotted to
docs/step_cache.png.

diffusers (a tiny random-weight Wan from examples/tiny_pipelines.py, 9x32x32 clips, 10 steps): speedup and the mean
absolute frame difference (uint8 levels) against uncached at the same seeds, for first_block and sea. Random
weights: no quality claim.

    PYTHONPATH=. python benchmarks/step_cache.py --clips 32 --rounds 3 [--plot docs/step_cache.png]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from vidgen.clip_request import ClipRequest, resolve_clip
from vidgen.pipelines.load import load_pipeline
from vidgen.pipelines.options import PipelineOptions, StepCacheOptions
from vidgen.runs.eval_runs import evaluate_splits, perceptual_eval
from vidgen.text import TextEncoder

log = logging.getLogger("benchmarks.step_cache")
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.3)
WAN_CACHES = ("first_block:0.05", "first_block:0.1", "first_block:0.2", "sea:0.25")
PROMPTS = ("a red circle moving left", "a blue square moving up", "a green triangle moving down",
           "a yellow circle moving right")


def _options(flag: str | None) -> PipelineOptions:
    return PipelineOptions(cache=StepCacheOptions.from_flag(flag) if flag else None)


def _clips(pipeline, n: int, **settings):
    return [resolve_clip(ClipRequest(prompt=PROMPTS[i % len(PROMPTS)], seed=100 + i, **settings),
                         pipeline.capabilities)[0] for i in range(n)]


def timed_side_by_side(pipelines: dict, batch: int, rounds: int, **settings) -> dict:
    """{name: (median seconds per clip, frames of the last round, cached-step counts)}; the pipelines take turns
    each round, on the same clips."""
    seconds = {name: [] for name in pipelines}
    last = {}
    for _ in range(rounds):
        for name, pipeline in pipelines.items():
            clips = _clips(pipeline, batch, **settings)
            started = time.perf_counter()
            out = pipeline.generate(clips)
            seconds[name].append((time.perf_counter() - started) / batch)
            last[name] = out
    return {name: (statistics.median(seconds[name]), last[name].frames, last[name].cached_steps)
            for name in pipelines}


def vidgen_sweep(clips: int, perceptual: int, rounds: int, batch: int) -> list[dict]:
    encoder = TextEncoder()
    flags = [None] + [f"first_block:{t}" for t in THRESHOLDS]
    pipelines = {flag: load_pipeline("shapes-tiny", encoder, options=_options(flag)) for flag in flags}
    timings = timed_side_by_side(pipelines, batch, rounds)
    log.info("seconds per clip: %s", {flag or "none": round(t[0], 3) for flag, t in timings.items()})
    rows = []
    for flag, pipeline in pipelines.items():
        scores = evaluate_splits(pipeline, clips, seed=0)
        accuracy = 100 * statistics.mean(split["all_three"] for split in scores.splits.values())
        fvd = perceptual_eval(pipeline, perceptual, seed=0)["fvd_vidgen"]
        seconds, _, cached = timings[flag]
        rows.append({"cache": flag or "none", "seconds_per_clip": seconds, "accuracy": accuracy, "fvd_vidgen": fvd,
                     "steps_full": cached[0]["full"] if cached else 24, "steps_skipped": cached[0]["skipped"]
                     if cached else 0})
        log.info("%s", rows[-1])
    base = rows[0]
    for row in rows:
        row["speedup"] = base["seconds_per_clip"] / row["seconds_per_clip"]
        row["accuracy_delta"] = row["accuracy"] - base["accuracy"]
        row["fvd_ratio"] = row["fvd_vidgen"] / base["fvd_vidgen"]
        row["meets_quality"] = row["accuracy_delta"] >= -1 and row["fvd_ratio"] <= 1.10
    return rows


def wan_sweep(rounds: int, batch: int) -> list[dict]:
    script = Path(__file__).resolve().parents[1] / "examples" / "tiny_pipelines.py"
    spec = importlib.util.spec_from_file_location("tiny_pipelines", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = module.save_tiny_pipeline("wan", Path(tempfile.mkdtemp(prefix="tiny-wan-")) / "wan")
    flags = [None, *WAN_CACHES]
    pipelines = {flag: load_pipeline(folder, options=_options(flag)) for flag in flags}
    timings = timed_side_by_side(pipelines, batch, rounds, steps=10, frames=9, height=32, width=32)
    base_seconds, base_frames, _ = timings[None]
    rows = []
    for flag, (seconds, frames, cached) in timings.items():
        diff = np.abs(frames.astype(np.int16) - base_frames.astype(np.int16))
        rows.append({"cache": flag or "none", "seconds_per_clip": seconds, "speedup": base_seconds / seconds,
                     "mean_abs_diff": float(diff.mean()), "max_abs_diff": int(diff.max()),
                     "steps_full": cached[0]["full"] if cached else 10,
                     "steps_skipped": cached[0]["skipped"] if cached else 0})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = [r["speedup"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(speed, [r["accuracy"] for r in rows], "o-")
    right.plot(speed, [r["fvd_vidgen"] for r in rows], "o-", color="tab:red")
    for r, s in zip(rows, speed, strict=True):
        left.annotate(r["cache"].removeprefix("first_block:"), (s, r["accuracy"]), fontsize=8)
        right.annotate(r["cache"].removeprefix("first_block:"), (s, r["fvd_vidgen"]), fontsize=8)
    left.set(xlabel="speedup per clip vs uncached", ylabel="prompt accuracy, all three (%)")
    right.set(xlabel="speedup per clip vs uncached", ylabel="FVD-vidgen (lower is better)")
    fig.suptitle("shapes-tiny, 24 guided steps: first-block cache thresholds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32, help="clips per accuracy split")
    parser.add_argument("--perceptual", type=int, default=48, help="clips for FVD-vidgen")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; the median is reported")
    parser.add_argument("--batch", type=int, default=8, help="clips per timed batch")
    parser.add_argument("--plot", type=Path, default=Path("docs/step_cache.png"))
    parser.add_argument("--skip-wan", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = {"vidgen": vidgen_sweep(args.clips, args.perceptual, args.rounds, args.batch)}
    if args.plot:
        plot(result["vidgen"], args.plot)
    if not args.skip_wan:
        result["wan"] = wan_sweep(min(args.rounds, 2), 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
