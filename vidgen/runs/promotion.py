"""Eval-gated promotion and rollback of registry aliases (`vidgen models promote|rollback|history`).

A promotion evaluates the candidate and the alias's current version on the same prompts or clips and the same seeds,
and moves the alias (`storage.aliases`, compare-and-swap) only if the candidate is not worse beyond the gate's
tolerances (`Gate`); the evaluation of both is stored in the alias's history, and a promotion the gate accepted is
recorded as having passed it. What the gate measures depends on the model:
- a vidgen model of the built-in world: prompt accuracy on seen and held-out compositions
  (`vidgen.runs.eval_runs.evaluate_model`) and seconds per clip;
- a diffusers model, or an adapter version (judged as the base its adapter.json names, or `base`, with the adapter
  fused in), given a data set (`data`, from `vidgen data ingest`): on the first `clips` clips of its eval split,
  validation loss at fixed noise, FD of frames to those clips and temporal consistency
  (`vidgen.runs.eval_runs.evaluate_held_out`), and seconds per clip;
- anything else (a diffusers model without `data`, a vidgen model trained on one's own videos) has no quality
  measure: it is refused unless forced, since speed alone is no gate.
With no current holder, a candidate that could be measured is promoted and its numbers are the alias's baseline. An
evaluation that cannot run is an `EvaluationFailed` naming the version and the error; forced, the alias moves and
the history records that no evaluation ran, and why.

A rollback goes to the newest version that passed the gate and was not rolled back from since
(`storage.aliases.rollback_target`), never simply to the previous one: rolling back twice cannot re-promote a bad
version. `rollback_plan` names that version before anything moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field

from storage.aliases import AliasRecord, current, history, move_alias, rollback_target
from storage.objectstore import ObjectStore, StorageError
from storage.package import ModelFileError, package_kind
from storage.registry import model_location, resolve
from storage.user_state import registry_root
from vidgen.pipelines.adapters import read_adapter
from vidgen.pipelines.base import ModelInfo
from vidgen.pipelines.load import describe_model
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.references import verify_model
from vidgen.runs.eval_runs import EvaluationError, evaluate_held_out, evaluate_model, measures_quality

GATED_SPLITS = ("seen", "heldout")
EVAL_SIZE_FLAGS = "--frames/--height/--width/--steps"
HELD_OUT_MEASURES = ("val_loss", "fd_frames", "subject_consistency", "flicker")

# (version, clips evaluated so far, clips in all): how a caller shows an evaluation's progress
Progress = Callable[[str, int, int], None]


class GateRefused(StorageError):
    """The candidate may not replace the alias's current version: worse beyond the gate's tolerances, or with no
    quality measure the gate can judge."""


class EvaluationFailed(StorageError):
    """The gate's evaluation of a version could not run (the model cannot make the clip it was asked for, ...)."""


class Gate(BaseModel):
    """How much worse a candidate may be than the version it replaces.

    The held-out tolerances, and why these defaults:
    - `val_loss_rise` 2%: the validation loss of both versions is measured on the same clips at the same noise levels
      and noise, so it repeats exactly and the comparison is paired; the tolerance is not for measurement noise but
      for how much worse at denoising this footage a candidate may be. Diffusion losses sit on a high floor (the
      part of the noise no model can predict), so a whole fine-tune moves them by a few per cent: giving back 2% is
      giving back a fine-tune's worth. A fraction, since the loss's scale depends on the objective and the footage.
    - `fd_rise` 10%: FD from a few hundred frames in 1280-d features is biased upward by the few samples (the same
      bias for both versions: same clips, frames and seeds) and moves by several per cent between sets of seeds of
      one model; 10% is beyond that, while a model that renders clearly other-looking footage moves it by far more.
    - `consistency_drop` 0.02: subject consistency and flicker are in [0, 1] (1: a still clip); VBench's published
      video models spread over about 0.90-0.99 on both, so 0.02 is a visible step down that ranking, not noise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    accuracy_drop: float = Field(0.05, ge=0, description="most a candidate's prompt accuracy (all three) may fall "
                                                         "below the current's, per split (vidgen models)")
    slowdown: float = Field(1.5, gt=0, description="most a candidate's seconds per clip may be, as a multiple of "
                                                   "the current's")
    val_loss_rise: float = Field(0.02, ge=0, description="most a candidate's held-out validation loss may exceed "
                                                         "the current's, as a fraction of it (diffusers models)")
    fd_rise: float = Field(0.10, ge=0, description="most a candidate's FD of frames to the held-out clips may exceed "
                                                   "the current's, as a fraction of it (diffusers models)")
    consistency_drop: float = Field(0.02, ge=0, description="most a candidate's subject consistency or flicker "
                                                            "score (0-1, higher steadier) may fall below the "
                                                            "current's (diffusers models)")


@dataclass(frozen=True)
class EvalClip:
    """The clip the gate evaluates at; None leaves that setting at the model's own default (for held-out clips:
    their own shape, fitted to the model)."""

    frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())


@dataclass(frozen=True)
class Subject:
    """What the gate evaluates for one registry version: the model, with the adapter fused in for adapter versions."""

    model: str
    lora: str | None = None

    @property
    def options(self) -> PipelineOptions:
        return PipelineOptions(lora=self.lora)


def subject_of(model_uri: str, version: str, root: str, base: str | None = None) -> Subject:
    """NAME@version as the gate evaluates it: itself, or for an adapter version the base it adapts (`base`, else the
    registry version its adapter.json names, NAME@vN in this registry) with the adapter."""
    ref = f"{model_uri}@{version}"
    verified = verify_model(ref)
    if package_kind(verified.folder) != "adapter":
        return Subject(ref)
    if base is not None:
        return Subject(base, ref)
    trained_on = read_adapter(verified).base_model
    name, _, base_version = trained_on.partition("#")[0].partition("@")
    if not base_version:
        raise ModelFileError(f"adapter {verified.label} was trained on {trained_on}, a folder, not a registry "
                             "version: pass --base REF, the model it was trained on")
    return Subject(f"{model_location(root, name).uri}@{base_version}", ref)


def evaluation(subject: Subject, version: str, clips: int, seed: int, clip: EvalClip = EvalClip(),
               progress: Progress | None = None) -> dict:
    """Prompt accuracy (or for a model without it, seconds per clip) of one version, at the same prompts, seeds and
    clip for every version; an EvaluationFailed naming the version and the error when the evaluation cannot run."""
    on_clips = (lambda done, total: progress(version, done, total)) if progress else None
    try:
        result = evaluate_model(subject.model, clips, seed, steps=clip.steps, frames=clip.frames,
                                height=clip.height, width=clip.width, progress=on_clips, options=subject.options)
    except (ModelFileError, StorageError):
        raise
    except (RuntimeError, ValueError) as e:  # the model's own code (a diffusers pipeline) refusing or failing
        detail = str(e).strip().partition("\n")[0]
        raise EvaluationFailed(f"evaluating {version} failed: {type(e).__name__}: {detail}; pass "
                               f"{EVAL_SIZE_FLAGS} for a clip it can make") from e
    facts = {"version": version, "label": result["model"], "backend": result["backend"],
             "seconds_per_clip": round(result["seconds_per_clip"], 4), "sampler": result["sampler"]}
    if "seen" in result:
        facts["prompt_accuracy"] = {split: round(result[split]["all_three"], 3) for split in GATED_SPLITS}
    if "clip_shape" in result:
        facts["clip_shape"] = result["clip_shape"]
    return facts


def held_out_evaluation(subject: Subject, version: str, data: str, clips: int, seed: int,
                        clip: EvalClip = EvalClip(), frame_network: torch.nn.Module | None = None,
                        progress: Progress | None = None) -> dict:
    """The held-out measures of one version on the data set's first `clips` eval clips (the same clips, noise and
    seeds for every version); an EvaluationFailed naming the version and the error when they cannot be measured."""
    on_clips = (lambda done, total: progress(version, done, total)) if progress else None
    try:
        result = evaluate_held_out(subject.model, data, clips, seed, clip.steps, clip.frames, clip.height, clip.width,
                                   subject.options, frame_network, on_clips)
    except EvaluationError as e:
        raise EvaluationFailed(str(e)) from e
    except ValueError as e:  # the data set, the model's kind or its adapter's base
        raise EvaluationFailed(f"evaluating {version} failed: {e}") from e
    measured = {k: result[k] for k in (*HELD_OUT_MEASURES, "subject_consistency_reference", "flicker_reference",
                                       "clips", "data", "data_digest", "seed")}
    return {"version": version, "label": result["model"], "backend": result["backend"],
            "seconds_per_clip": result["seconds_per_clip"], "sampler": {"steps": result["steps"]},
            "clip_shape": result["clip_shape"], "held_out": measured}


def none_ran(version: str, why: str) -> dict:
    """The facts of a version the gate did not evaluate, and why (recorded in the alias's history)."""
    return {"version": version, "none_ran": why}


def gate_problems(candidate: dict, incumbent: dict | None, gate: Gate) -> list[str]:
    """Why the candidate may not replace the incumbent (None: the alias is unset) (empty: it may)."""
    if "none_ran" in candidate:
        return [f"no evaluation of {candidate['version']} ran: {candidate['none_ran']}"]
    if "prompt_accuracy" not in candidate and "held_out" not in candidate:
        return [_no_quality_measure(candidate["version"], candidate.get("backend", "vidgen"))]
    if incumbent is None:
        return []
    if "none_ran" in incumbent:
        return [f"no evaluation of the current {incumbent['version']} ran: {incumbent['none_ran']}"]
    if "held_out" in candidate:
        if "held_out" not in incumbent:
            return [f"the current {incumbent['version']} was not measured on held-out clips, so nothing compares "
                    "the two"]
        problems = held_out_problems(candidate["held_out"], incumbent["held_out"], gate)
    else:
        problems = _accuracy_problems(candidate, incumbent, gate)
    if candidate["seconds_per_clip"] > incumbent["seconds_per_clip"] * gate.slowdown:
        problems.append(f"{candidate['seconds_per_clip']:.3f} s a clip > {gate.slowdown}x the current "
                        f"{incumbent['seconds_per_clip']:.3f} s")
    return problems


def held_out_problems(candidate: dict, incumbent: dict, gate: Gate) -> list[str]:
    """Each held-out measure on which the candidate is worse than the incumbent beyond the gate, with both numbers."""
    problems = []
    rises = {"val_loss": ("held-out validation loss", gate.val_loss_rise),
             "fd_frames": ("FD of frames to the held-out clips", gate.fd_rise)}
    for key, (what, rise) in rises.items():
        if candidate[key] > incumbent[key] * (1 + rise):
            problems.append(f"{what} {candidate[key]:.4f} > the current's {incumbent[key]:.4f} + {rise:.0%}")
    for key in ("subject_consistency", "flicker"):
        if candidate[key] < incumbent[key] - gate.consistency_drop:
            problems.append(f"{key.replace('_', ' ')} {candidate[key]:.4f} < the current's {incumbent[key]:.4f} - "
                            f"{gate.consistency_drop}")
    return problems


def _accuracy_problems(candidate: dict, incumbent: dict, gate: Gate) -> list[str]:
    problems = []
    for split, before in incumbent.get("prompt_accuracy", {}).items():
        after = candidate.get("prompt_accuracy", {}).get(split)
        if after is not None and after < before - gate.accuracy_drop:
            problems.append(f"prompt accuracy on {split} {after:.3f} < {before:.3f} - {gate.accuracy_drop}")
    return problems


def measure_for(model: ModelInfo, data: str | None) -> str | None:
    """How the gate measures this model's quality: "prompt_accuracy" (a vidgen model of the built-in world),
    "held_out" (a diffusers model, given `data`), or None (no quality measure). `data` for a vidgen model is
    refused: held-out measures need a diffusers pipeline's VAE and text encoder."""
    if data is not None and model.backend != "diffusers":
        raise ValueError(f"--data: held-out measures apply to diffusers models and adapters; {model.label} is a "
                         f"{model.backend} model: leave out --data")
    if measures_quality(model):
        return "prompt_accuracy"
    return "held_out" if data is not None else None


@dataclass(frozen=True)
class _Evaluator:
    """One promotion's evaluation settings, applied alike to the candidate and the current version."""

    measure: str | None
    data: str | None
    clips: int
    seed: int
    clip: EvalClip
    progress: Progress | None
    force: bool
    frame_network: torch.nn.Module | None = None

    def __call__(self, subject: Subject, version: str) -> dict:
        """The version's facts, or with `force` the record that none ran when its evaluation cannot run."""
        try:
            if self.measure == "held_out":
                return held_out_evaluation(subject, version, self.data, self.clips, self.seed, self.clip,
                                           self.frame_network, self.progress)
            return evaluation(subject, version, self.clips, self.seed, self.clip, self.progress)
        except EvaluationFailed as e:
            if not self.force:
                raise
            return none_ran(version, str(e))


def promote(name: str, version: str, alias: str, reason: str, force: bool = False, root: str | None = None,
            store: ObjectStore | None = None, clips: int = 32, seed: int = 0, gate: Gate = Gate(),
            clip: EvalClip = EvalClip(), progress: Progress | None = None, data: str | None = None,
            base: str | None = None) -> AliasRecord:
    """Evaluate NAME@version against NAME@alias and move the alias to it if the gate lets it (or `force`).

    `data`: a data set whose eval split diffusers candidates are measured on (`clips` clips; `clip` caps their size
    and sets the sampler steps); `base`: the model an adapter candidate was trained on, when its adapter.json names a
    folder rather than a version of this registry. A candidate the gate has no quality measure for is refused before
    anything renders; forced, it is evaluated (timed) only when `clip` names a size (at the model's default a real
    video model takes hours on a CPU), and otherwise recorded as not evaluated. Forced past an evaluation that
    fails, the failure is what is recorded."""
    store = store or ObjectStore()
    root = root or registry_root()
    model_uri = model_location(root, name).uri
    version = resolve(f"{model_uri}@{version}", store=store).version
    before = current(model_uri, alias, store)
    if before is not None and before.version == version:
        raise StorageError(f"{name}@{alias} already names {version}")
    subject = subject_of(model_uri, version, root, base)
    model = describe_model(subject.model, subject.options)  # before any render; checks an adapter's base
    measure = measure_for(model, data)
    if measure is None and not force:
        raise _refused(f"{name}@{version} cannot pass the gate for {name}@{alias}",
                       [_no_quality_measure(version, model.backend)])
    if measure is None and not clip.given:
        found = {"candidate": none_ran(version, f"{_no_quality_measure(version, model.backend)}; and no clip to "
                                                f"time was asked for ({EVAL_SIZE_FLAGS})")}
    else:
        frame_network = None
        if measure == "held_out":
            from vidgen.runs.feature_nets import efficientnet_lite0

            frame_network = efficientnet_lite0()  # loaded once for both versions
        evaluate = _Evaluator(measure, data, clips, seed, clip, progress, force, frame_network)
        found = {"candidate": evaluate(subject, version)}
        if before is None:
            found["baseline"] = "none_ran" not in found["candidate"]  # the numbers later candidates are held to
        elif "none_ran" not in found["candidate"]:
            found["current"] = evaluate(subject_of(model_uri, before.version, root), before.version)
    problems = gate_problems(found["candidate"], found.get("current"), gate)
    found.update(clips_per_split=clips, seed=seed, gate=gate.model_dump(), problems=problems,
                 forced=bool(force and problems))
    if data is not None:
        found["data"] = data
    if problems and not force:
        raise _refused(f"{name}@{version} is worse than {name}@{alias} ({before.version})", problems)
    return move_alias(model_uri, alias, version, reason, store, expected=before.revision if before else 0,
                      evaluation=found, passed_gate=not problems)


def _no_quality_measure(version: str, backend: str) -> str:
    if backend == "diffusers":
        return (f"no quality measure exists for {version}: a diffusers model is judged on held-out footage and none "
                "was given: pass --data URI (a data set from `vidgen data ingest` with an eval split) to measure its "
                "validation loss, FD of frames and temporal consistency against the current version; speed alone "
                "passes no model")
    return (f"no quality measure exists for {version}: the gate's one quality measure, prompt accuracy, scores "
            "vidgen models trained on the built-in world only, and speed alone passes no model")


def _refused(verdict: str, problems: list[str]) -> GateRefused:
    return GateRefused(f"{verdict}: {'; '.join(problems)}. Nothing moved; --force to promote anyway (recorded as "
                       "forced, never as passing the gate)")


@dataclass(frozen=True)
class RollbackPlan:
    """Where a rollback of an alias goes, decided from its history at `revision`."""

    model_uri: str
    alias: str
    revision: int
    current: str
    target: str


def rollback_plan(name: str, alias: str, root: str | None = None, store: ObjectStore | None = None) -> RollbackPlan:
    """The version a rollback of NAME@alias would move to (the newest that passed the gate and was not rolled back
    from since), without moving anything; StorageError when there is none."""
    model_uri = model_location(root or registry_root(), name).uri
    records = history(model_uri, alias, store or ObjectStore())
    target = rollback_target(records)
    if target is None:
        now = f"names {records[-1].version}" if records else "was never set"
        raise StorageError(f"{name}@{alias} {now} and has no other version that passed the promotion gate (and was "
                           f"not rolled back from) to roll back to; promote one with `vidgen models promote "
                           f"{name}@vN --to {alias}` (--force for a model the gate cannot measure)")
    return RollbackPlan(model_uri, alias, records[-1].revision, records[-1].version, target)


def rollback(name: str, alias: str, reason: str, root: str | None = None, store: ObjectStore | None = None,
             kind: str = "rollback", plan: RollbackPlan | None = None) -> AliasRecord:
    """Move the alias to where `plan` (default: `rollback_plan` now) says; AliasConflict if it moved since the plan
    was made."""
    plan = plan or rollback_plan(name, alias, root, store)
    return move_alias(plan.model_uri, plan.alias, plan.target, reason, store, expected=plan.revision, kind=kind)
