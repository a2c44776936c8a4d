"""Distillation's composition: the teacher's prompts as a render manifest, its rendered trajectories read back, the
student trained (`vidgen.distill`), judged beside its teacher on the same prompts and seeds, and packaged."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch

from storage.cards import Lineage, invoked_command, model_card
from storage.objectstore import ObjectStore, parse_uri
from vidgen import synth
from vidgen.diffusion import initial_noise
from vidgen.distill import DistillConfig, Trajectories, distill
from vidgen.pipelines.base import VideoPipeline
from vidgen.pipelines.packages import save_model
from vidgen.precision import autocast_dtype
from vidgen.runs.eval_runs import evaluate_splits, perceptual_eval, sampler_settings
from vidgen.text import TextEncoder

METHOD = "offline k-step trajectory distillation, classifier-free guidance folded in"


def teacher_manifest(n: int, seed: int) -> bytes:
    """n render rows of the world's training compositions and caption templates (held-out compositions and
    paraphrases stay unseen, so the student's held-out and paraphrase scores mean what the teacher's do)."""
    specs = synth.sample_specs(n, 20_000_000 + seed, "train")
    rows = [{"id": f"t{i:06d}", "prompt": s.caption, "seed": s.background_seed} for i, s in enumerate(specs)]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def manifest_ids(manifest: bytes) -> list[str]:
    """The row ids of a teacher manifest, in order."""
    return [json.loads(line)["id"] for line in manifest.decode().splitlines() if line.strip()]


def teacher_records(store: ObjectStore, work: str, teacher: str, teacher_steps: int, ids: list[str]) -> list[dict]:
    """The ledger records of rows `ids` in WORK, each of which must have been rendered by `teacher` (the label runs
    name a model by, weights digest included) at `teacher_steps`: WORK may hold other rows, or rows another teacher
    rendered, and a student must never learn from clips its card does not name."""
    out = parse_uri(work)
    ledger = {r["id"]: r for r in map(json.loads, store.read(out.join("results.jsonl")).decode().splitlines())}
    records = []
    for row_id in ids:
        record = ledger.get(row_id)
        if record is None:
            raise ValueError(f"{out.uri} holds no rendered trajectory of row {row_id}: render the teacher again")
        if (record.get("model"), record.get("steps")) != (teacher, teacher_steps):
            raise ValueError(f"{out.uri} row {row_id} was rendered by {record.get('model')} at {record.get('steps')} "
                             f"steps, not by the teacher {teacher} at {teacher_steps}: render it again (or use a new "
                             "work folder)")
        records.append(record)
    return records


def load_trajectories(store: ObjectStore, work: str, encoder: TextEncoder, teacher_steps: int, teacher: str,
                      ids: list[str]) -> Trajectories:
    """The trajectories of rows `ids` a render of `teacher` with `trajectory_steps` left in WORK (one .npz per
    ledger record, `teacher_records`), with the noise z recomputed from each clip's seed and checked against the
    stored first state."""
    out = parse_uri(work)
    records = teacher_records(store, work, teacher, teacher_steps, ids)
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


def judge(pipeline: VideoPipeline, clips: int, perceptual_clips: int, seed: int = 0) -> dict:
    """Prompt accuracy per split, perceptual metrics and seconds per clip (batched) of one model, at its
    pipeline's sampler settings (teacher and student: `VidgenPipeline.from_model`, on the same prompts and seeds)."""
    scores = evaluate_splits(pipeline, clips, seed)
    return {**scores.splits, "perceptual": perceptual_eval(pipeline, perceptual_clips, seed),
            "sampler": sampler_settings(pipeline.capabilities), "seconds_per_clip": scores.seconds_per_clip}


def train_student(teacher, data: Trajectories, cfg: DistillConfig, progress=None):
    """The student and its loss history (bf16 autocast where the CPU has it, like training)."""
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
    lineage = Lineage(invoked_command("run_distill()"), cfg.seed, {
        "teacher": teacher, "method": METHOD, "trajectories": trajectories, "config": cfg.model_dump(),
        "minutes": minutes})
    return save_model(student, folder, student_card(student, cfg.steps, lineage, scores),
                      extra={"sampler": {"steps": cfg.steps, "guidance": 1.0}, "distilled_from": lineage.to_dict()},
                      weights_dtype=torch.float16)


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


def student_card(student, steps: int, lineage: Lineage, scores: dict) -> str:
    """The student's card: its metrics beside its teacher's, and its lineage naming the teacher by weights digest."""
    teacher, student_scores = scores["teacher"], scores["student"]
    source = lineage.source
    meta = {"pipeline_tag": "text-to-video", "library_name": "vidgen", "license": "apache-2.0",
            "datasets": [f"vidgen-builtin-{synth.GENERATOR_VERSION}"], "steps": steps, "params": student.num_params(),
            "metrics": {"prompt_accuracy_seen": round(student_scores["seen"]["all_three"], 3),
                        "prompt_accuracy_heldout": round(student_scores["heldout"]["all_three"], 3),
                        "prompt_accuracy_paraphrase": round(student_scores["paraphrase"]["all_three"], 3),
                        "fd_frames": round(student_scores["perceptual"]["fd_frames"], 2),
                        "fvd_vidgen": round(student_scores["perceptual"]["fvd_vidgen"], 3)}}
    timesteps, k_steps = ("its timestep", "1 step") if steps == 1 else (f"its {steps} timesteps", f"{steps} steps")
    config, minutes = source["config"], source["minutes"]
    return model_card(meta, lineage, f"""# {steps}-step student of {source['teacher']['ref']}

Distilled from `{source['teacher']['ref']}` (weights sha256 `{source['teacher']['digest']}`) by {METHOD}: the
teacher rendered {source['trajectories']} trajectories ({teacher['sampler']['steps']} Euler steps, guidance
{teacher['sampler']['guidance']}) through the bulk-render actor pool; the student, initialised from the teacher,
regresses the teacher's final latents from the states at {timesteps}, in
{config['own_rollout_share']:.0%} of the batches from its own roll-out's states
({config['train_steps']} steps of {config['batch_size']}, lr {config['lr']}).
It samples with {k_steps} and no guidance: one transformer pass a step, against the teacher's two.
Trajectories took {minutes['trajectories']:.1f} min, training {minutes['training']:.1f} min:
```
{lineage.command}
```

## Beside the teacher, on the same prompts and seeds
Prompt accuracy (all three attributes) on {scores['clips_per_split']} clips per split; perceptual metrics on
{student_scores['perceptual']['clips']} clips of seen prompts against the world's own clips of those prompts (lower
is closer; `vidgen.perceptual`); seconds of sampling per clip in batches of 48 on this machine.

{HEADER}
{_row('teacher', teacher)}
{_row('student', student_scores)}
{_world_row(teacher['perceptual'])}

## Limits
It knows only the built-in world, like its teacher, and is trained for {k_steps}: other step
counts or guidance work but were not trained for.
""")
