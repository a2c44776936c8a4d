"""Distillation end to end, K = 1..4: one set of teacher trajectories (rendered once by the bulk-render actor pool,
keeping the states every K needs), a student trained for each K, and every model judged on the same prompts and
seeds: prompt accuracy, perceptual metrics, and milliseconds per clip at batch 1 (the serving case: text encoding,
the transformer passes, decoding and MP4 encoding of one clip) against the teacher's 24 guided steps.
Goal: the whole run within 30 minutes on 2 CPU cores.

    python benchmarks/distill.py --trajectories 1024 --train-steps 500 --eval-clips 48
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time

import torch

PROMPTS = ("a red square moving right", "a green circle moving down", "a blue triangle moving left",
           "a yellow square moving up")


def ms_per_clip(pipeline, clips: int = 12) -> float:
    """Median milliseconds for one clip from its prompt to MP4 bytes, one thread, new prompts (no cache hits)."""
    from storage.video import encode
    from vidgen.clip_request import ClipRequest, resolve_clip

    torch.set_num_threads(1)
    times = []
    for i in range(clips + 2):
        prompt = f"{PROMPTS[i % len(PROMPTS)]} {'please ' * (i // len(PROMPTS))}".strip()
        started = time.perf_counter()
        clip, _ = resolve_clip(ClipRequest(prompt=prompt, seed=i), pipeline.capabilities)
        with torch.inference_mode():
            encode(pipeline.generate([clip]).frames[0])
        times.append(time.perf_counter() - started)
    torch.set_num_threads(2)
    return 1000 * statistics.median(times[2:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="shapes-tiny")
    parser.add_argument("--trajectories", type=int, default=1024)
    parser.add_argument("--train-steps", type=int, default=500)
    parser.add_argument("--eval-clips", type=int, default=48, help="clips per split")
    parser.add_argument("--perceptual-clips", type=int, default=32)
    parser.add_argument("--work", default=None, help="trajectory folder to reuse (default: a new temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from jobs.distill import DistillJobConfig, read_trajectories, render_trajectories, teacher_guidance
    from vidgen.diffusion import SamplerConfig
    from vidgen.distill import DistillConfig
    from vidgen.pipelines.packages import load_package
    from vidgen.pipelines.references import model_label, resolve_model
    from vidgen.pipelines.vidgen_package import VidgenPipeline
    from vidgen.runs.distillation import judge, train_student
    from vidgen.text import TextEncoder

    began = time.perf_counter()
    work = args.work or tempfile.mkdtemp(prefix="vidgen-distill-", dir="/tmp")
    cfg = DistillJobConfig(teacher=args.teacher, out=f"{work}/student", work=work, trajectories=args.trajectories)
    folder = resolve_model(args.teacher)
    teacher = load_package(folder)
    guidance = teacher_guidance(cfg, teacher)
    render_min = render_trajectories(cfg, guidance)
    import ray

    ray.shutdown()  # the actor pool's cores go back to training
    encoder = TextEncoder()
    data = read_trajectories(cfg, model_label(args.teacher, folder, teacher.sums), encoder)
    teacher_pipeline = VidgenPipeline.from_model(teacher.model, SamplerConfig(steps=cfg.teacher_steps,
                                                                              guidance=guidance), encoder, "teacher")
    rows = [("teacher", cfg.teacher_steps, guidance, 0.0,
             judge(teacher_pipeline, args.eval_clips, args.perceptual_clips), ms_per_clip(teacher_pipeline))]
    for k in (1, 2, 3, 4):
        started = time.perf_counter()
        student, _ = train_student(teacher.model, data, DistillConfig(steps=k, train_steps=args.train_steps))
        minutes = (time.perf_counter() - started) / 60
        pipeline = VidgenPipeline.from_model(student, SamplerConfig(steps=k, guidance=1.0), encoder, f"K={k}")
        rows.append((f"student K={k}", k, 1.0, minutes, judge(pipeline, args.eval_clips, args.perceptual_clips),
                     ms_per_clip(pipeline)))
    total = (time.perf_counter() - began) / 60
    print(f"{len(data)} teacher trajectories in {render_min:.1f} min; {args.train_steps} training steps a student; "
          f"{args.eval_clips} clips a split; perceptual metrics on {args.perceptual_clips} clips of seen prompts")
    print("| model | steps | guidance | train min | seen | held-out | paraphrase | FD-frames | FVD-vidgen | "
          "subject consistency | flicker | ms/clip (batch 1) | vs teacher |")
    print("|---" * 13 + "|")
    teacher_ms = rows[0][5]
    for name, steps, g, minutes, s, ms in rows:
        p = s["perceptual"]
        print(f"| {name} | {steps} | {g} | {minutes:.1f} | {s['seen']['all_three']:.2f} | "
              f"{s['heldout']['all_three']:.2f} | {s['paraphrase']['all_three']:.2f} | {p['fd_frames']:.1f} | "
              f"{p['fvd_vidgen']:.2f} | {p['subject_consistency']:.3f} | {p['flicker']:.3f} | {ms:.1f} | "
              f"{teacher_ms / ms:.1f}x |")
    print(f"whole run: {total:.1f} min (goal <= 30)")


if __name__ == "__main__":
    main()
