"""Distillation's composition: the teacher's prompts as a render manifest, its rendered trajectories read back, the
student trained (`vidgen.distill`), judged beside its teacher on the same prompts and seeds, and packaged."""

from __future__ import annotations

import io
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from storage.cards import render_card
from storage.objectstore import ObjectStore, parse_uri
from vidgen import synth
from vidgen.diffusion import SamplerConfig, initial_noise
from vidgen.distill import DistillConfig, Trajectories, distill
from vidgen.evaluation import evaluate_splits
from vidgen.pipelines.packages import save_model
from vidgen.runs.cards import git_commit
from vidgen.runs.eval_runs import perceptual_eval
from vidgen.text import TextEncoder

METHOD = "offline k-step trajectory distillation, classifier-free guidance folded in"


def teacher_manifest(n: int, seed: int) -> bytes:
    """n render rows of the world's training compositions and caption templates (held-out compositions and
    paraphrases stay unseen, so the student's held-out and paraphrase scores mean what the teacher's do)."""
    specs = synth.sample_specs(n, 20_000_000 + seed, "train")
    rows = [{"id": f"t{i:06d}", "prompt": s.caption, "seed": s.background_seed} for i, s in enumerate(specs)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def load_trajectories(store: ObjectStore, work: str, encoder: TextEncoder, teacher_steps: int) -> Trajectories:
    """The trajectories a render with `trajectory_steps` left in WORK (one .npz per ledger record), with the noise
    z recomputed from each clip's seed and checked against the stored first state."""
    out = parse_uri(work)
    records = [json.loads(line) for line in store.read(out.join("results.jsonl")).decode().splitlines()]
    if not records:
        raise ValueError(f"{out.uri} holds no rendered trajectories")
    states: dict[int, list] = {}
    x0, seeds, prompts = [], [], []
    for record in records:
        with np.load(io.BytesIO(store.read(out.join("trajectories", f"{record['id']}.npz"))),
                     allow_pickle=False) as npz:
            for step, state in zip(npz["steps"].tolist(), npz["states"], strict=True):
                states.setdefault(step, []).append(state)
            x0.append(npz["x0"])
        seeds.append(record["seed"])
        prompts.append(record["prompt"])
    z = initial_noise(seeds, x0[0].shape)
    if 0 in states and not torch.allclose(torch.from_numpy(np.stack(states[0])), z, atol=1e-5):
        raise ValueError(f"the trajectories in {out.uri} do not start from their seeds' noise")
    return Trajectories(z, {s: torch.from_numpy(np.stack(v)) for s, v in states.items()},
                        torch.from_numpy(np.stack(x0)), encoder.encode(prompts), teacher_steps)


def judge(model, sampler: SamplerConfig, encoder: TextEncoder, clips: int, perceptual_clips: int,
          dtype: torch.dtype | None, seed: int = 0) -> dict:
    """Prompt accuracy per split, perceptual metrics and seconds per clip (batched) of one model."""
    started = time.perf_counter()
    result = evaluate_splits(model, encoder, sampler, clips, seed, dtype)
    seconds = (time.perf_counter() - started) / (clips * len(result))
    result["perceptual"] = perceptual_eval(model, encoder, sampler, perceptual_clips, seed, dtype)
    return {**result, "sampler": sampler.model_dump(), "seconds_per_clip": seconds}


def train_student(teacher, data: Trajectories, cfg: DistillConfig, progress=None):
    """The student and its loss history (bf16 autocast where the CPU has it, like training)."""
    from vidgen.precision import autocast_dtype

    return distill(teacher, data, cfg, progress, autocast_dtype("auto", "cpu"))


def write_student(student, out: str | Path, teacher: dict, cfg: DistillConfig, trajectories: int,
                  scores: dict, history: list[dict], minutes: dict) -> Path:
    """The student as a package: sampler defaults K steps without guidance, its lineage in config.json, and a
    card with its metrics next to the teacher's."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evals.json").write_text(json.dumps(scores, indent=1) + "\n")
    (folder / "distill_loss.csv").write_text("step,loss,own_rollout\n" + "".join(
        f"{h['step']},{h['loss']:.6f},{int(h['own_rollout'])}\n" for h in history))
    command = "vidgen " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "run_distill()"
    lineage = {"teacher": teacher, "method": METHOD, "steps": cfg.steps, "trajectories": trajectories,
               "config": cfg.model_dump(), "minutes": minutes, "git_commit": git_commit(), "command": command}
    card = student_card(student, lineage, scores)
    return save_model(student, folder, card, extra={"sampler": {"steps": cfg.steps, "guidance": 1.0},
                                                    "distilled_from": lineage}, weights_dtype=torch.float16)


def _row(name: str, s: dict) -> str:
    p = s["perceptual"]
    return (f"| {name} | {s['sampler']['steps']} | {s['sampler']['guidance']} | {s['seen']['all_three']:.2f} | "
            f"{s['heldout']['all_three']:.2f} | {s['paraphrase']['all_three']:.2f} | {p['fd_frames']:.1f} | "
            f"{p['kid_frames']:.4f} | {p['fvd_vidgen']:.2f} | {p['subject_consistency']:.3f} | {p['flicker']:.3f} | "
            f"{s['seconds_per_clip'] * 1000:.1f} |")


HEADER = ("| model | steps | guidance | seen | held-out | paraphrase | FD-frames | KID-frames | FVD-vidgen | "
          "subject consistency | flicker | ms/clip |\n" + "|---" * 12 + "|")


def _world_row(p: dict) -> str:
    return (f"| the world's own clips (the reference) | | | | | | 0 | 0 | 0 | "
            f"{p['subject_consistency_reference']:.3f} | {p['flicker_reference']:.3f} | |")


def student_card(student, lineage: dict, scores: dict) -> str:
    teacher, student_scores = scores["teacher"], scores["student"]
    seen = student_scores["seen"]["all_three"]
    meta = {"pipeline_tag": "text-to-video", "library_name": "vidgen", "license": "apache-2.0",
            "datasets": ["vidgen-builtin-shapes-v1"], "distilled_from": lineage["teacher"]["ref"],
            "teacher_digest": lineage["teacher"]["digest"], "method": METHOD, "steps": lineage["steps"],
            "trajectories": lineage["trajectories"], "params": student.num_params(),
            "git_commit": lineage["git_commit"],
            "metrics": {"prompt_accuracy_seen": round(seen, 3),
                        "prompt_accuracy_heldout": round(student_scores["heldout"]["all_three"], 3),
                        "prompt_accuracy_paraphrase": round(student_scores["paraphrase"]["all_three"], 3),
                        "fd_frames": round(student_scores["perceptual"]["fd_frames"], 2),
                        "fvd_vidgen": round(student_scores["perceptual"]["fvd_vidgen"], 3)}}
    k = lineage["steps"]
    timesteps, steps = ("its timestep", "1 step") if k == 1 else (f"its {k} timesteps", f"{k} steps")
    return render_card(meta, f"""# {k}-step student of {lineage['teacher']['ref']}

Distilled from `{lineage['teacher']['ref']}` (weights sha256 `{lineage['teacher']['digest']}`) by {METHOD}: the
teacher rendered {lineage['trajectories']} trajectories ({teacher['sampler']['steps']} Euler steps, guidance
{teacher['sampler']['guidance']}) through the bulk-render actor pool; the student, initialised from the teacher,
regresses the teacher's final latents from the states at {timesteps}, in
{lineage['config']['own_rollout_share']:.0%} of the batches from its own roll-out's states
({lineage['config']['train_steps']} steps of {lineage['config']['batch_size']}, lr {lineage['config']['lr']}).
It samples with {steps} and no guidance: one transformer pass a step, against the teacher's two.
Trajectories took {lineage['minutes']['trajectories']:.1f} min, training {lineage['minutes']['training']:.1f} min:
```
{lineage['command']}
```

## Beside the teacher, on the same prompts and seeds
Prompt accuracy (all three attributes) on {scores['clips_per_split']} clips per split; perceptual metrics on
{student_scores['perceptual']['clips']} clips of seen prompts against the world's own clips of those prompts (lower
is closer; `vidgen.perceptual`); seconds per clip in batches of 48 on this machine.

{HEADER}
{_row('teacher', teacher)}
{_row('student', student_scores)}
{_world_row(teacher['perceptual'])}

## Limits
It knows only the built-in world, like its teacher, and is trained for {steps}: other step
counts or guidance work but were not trained for.
""")
