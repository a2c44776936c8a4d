"""Eval-gated promotion and rollback of registry aliases (`vidgen models promote|rollback|history`).

A promotion evaluates the candidate and the alias's current version on the same prompts and seeds
(`vidgen.runs.eval_runs.evaluate_model`: prompt accuracy on seen and held-out compositions where the built-in
world applies, and seconds per clip), and moves the alias (`storage.aliases`, compare-and-swap) only if the
candidate is not worse beyond the gate's tolerances; the evaluation of both is stored in the alias's history, and
a promotion the gate accepted is recorded as having passed it. A candidate the gate has no quality measure for (a
diffusers model, or a vidgen model trained on one's own videos: prompt accuracy scores the built-in world only) is
refused unless forced: speed alone is no gate. An evaluation that cannot run is an `EvaluationFailed` naming the
version and the error; forced, the alias moves and the history records that no evaluation ran, and why.

A rollback goes to the newest version that passed the gate and was not rolled back from since
(`storage.aliases.rollback_target`), never simply to the previous one: rolling back twice cannot re-promote a bad
version. `rollback_plan` names that version before anything moves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from storage.aliases import AliasRecord, current, history, move_alias, rollback_target
from storage.objectstore import ObjectStore, StorageError
from storage.package import ModelFileError
from storage.registry import model_location, resolve
from storage.user_state import registry_root
from vidgen.pipelines.load import describe_model
from vidgen.runs.eval_runs import evaluate_model, measures_quality

GATED_SPLITS = ("seen", "heldout")
EVAL_SIZE_FLAGS = "--frames/--height/--width/--steps"

# (version, clips evaluated so far, clips in all): how a caller shows an evaluation's progress
Progress = Callable[[str, int, int], None]


class GateRefused(StorageError):
    """The candidate may not replace the alias's current version: worse beyond the gate's tolerances, or with no
    quality measure the gate can judge."""


class EvaluationFailed(StorageError):
    """The gate's evaluation of a version could not run (the model cannot make the clip it was asked for, ...)."""


@dataclass(frozen=True)
class Gate:
    """How much worse a candidate may be than the version it replaces."""

    accuracy_drop: float = 0.05  # of prompt accuracy (all three), per split
    slowdown: float = 1.5  # seconds per clip, as a ratio


@dataclass(frozen=True)
class EvalClip:
    """The clip the gate evaluates at; None leaves that setting at the model's own default."""

    frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None

    @property
    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())


def evaluation(model_uri: str, version: str, clips: int, seed: int, clip: EvalClip = EvalClip(),
               progress: Progress | None = None) -> dict:
    """What the gate compares, for one version (the same prompts, seeds and clip for every version); an
    EvaluationFailed naming the version and the error when the evaluation cannot run."""
    on_clips = (lambda done, total: progress(version, done, total)) if progress else None
    try:
        result = evaluate_model(f"{model_uri}@{version}", clips, seed, steps=clip.steps, frames=clip.frames,
                                height=clip.height, width=clip.width, progress=on_clips)
    except (ModelFileError, StorageError):
        raise
    except (RuntimeError, ValueError) as e:  # the model's own code (a diffusers pipeline) refusing or failing
        detail = str(e).strip().partition("\n")[0]
        raise EvaluationFailed(f"evaluating {version} failed: {type(e).__name__}: {detail}; pass "
                               f"{EVAL_SIZE_FLAGS} for a clip it can make") from e
    facts = {"version": version, "label": result["model"], "seconds_per_clip": round(result["seconds_per_clip"], 4),
             "sampler": result["sampler"]}
    if "seen" in result:
        facts["prompt_accuracy"] = {split: round(result[split]["all_three"], 3) for split in GATED_SPLITS}
    if "clip_shape" in result:
        facts["clip_shape"] = result["clip_shape"]
    return facts


def none_ran(version: str, why: str) -> dict:
    """The facts of a version the gate did not evaluate, and why (recorded in the alias's history)."""
    return {"version": version, "none_ran": why}


def gate_problems(candidate: dict, incumbent: dict | None, gate: Gate) -> list[str]:
    """Why the candidate may not replace the incumbent (None: the alias is unset) (empty: it may)."""
    if "none_ran" in candidate:
        return [f"no evaluation of {candidate['version']} ran: {candidate['none_ran']}"]
    if "prompt_accuracy" not in candidate:
        return [_no_quality_measure(candidate["version"])]
    if incumbent is None:
        return []
    if "none_ran" in incumbent:
        return [f"no evaluation of the current {incumbent['version']} ran: {incumbent['none_ran']}"]
    problems = []
    for split, before in incumbent.get("prompt_accuracy", {}).items():
        after = candidate.get("prompt_accuracy", {}).get(split)
        if after is not None and after < before - gate.accuracy_drop:
            problems.append(f"prompt accuracy on {split} {after:.3f} < {before:.3f} - {gate.accuracy_drop}")
    if candidate["seconds_per_clip"] > incumbent["seconds_per_clip"] * gate.slowdown:
        problems.append(f"{candidate['seconds_per_clip']:.3f} s a clip > {gate.slowdown}x the current "
                        f"{incumbent['seconds_per_clip']:.3f} s")
    return problems


def promote(name: str, version: str, alias: str, reason: str, force: bool = False, root: str | None = None,
            store: ObjectStore | None = None, clips: int = 32, seed: int = 0, gate: Gate = Gate(),
            clip: EvalClip = EvalClip(), progress: Progress | None = None) -> AliasRecord:
    """Evaluate NAME@version against NAME@alias at `clip` and move the alias to it if the gate lets it (or `force`).

    A candidate the gate has no quality measure for is refused before anything renders; forced, it is evaluated
    (timed) only when `clip` names a size (at the model's default a real video model takes hours on a CPU), and
    otherwise recorded as not evaluated. Forced past an evaluation that fails, the failure is what is recorded."""
    store = store or ObjectStore()
    model_uri = model_location(root or registry_root(), name).uri
    version = resolve(f"{model_uri}@{version}", store=store).version
    before = current(model_uri, alias, store)
    if before is not None and before.version == version:
        raise StorageError(f"{name}@{alias} already names {version}")
    quality = measures_quality(describe_model(f"{model_uri}@{version}"))  # before any render
    if not quality and not force:
        raise _refused(f"{name}@{version} cannot pass the gate for {name}@{alias}", [_no_quality_measure(version)])
    if not quality and not clip.given:
        found = {"candidate": none_ran(version, f"no quality measure exists for it, and no clip to time was asked "
                                                f"for ({EVAL_SIZE_FLAGS})")}
    else:
        found = {"candidate": _evaluate(model_uri, version, clips, seed, clip, progress, force)}
        if before is not None and "none_ran" not in found["candidate"]:
            found["current"] = _evaluate(model_uri, before.version, clips, seed, clip, progress, force)
    problems = gate_problems(found["candidate"], found.get("current"), gate)
    found.update(clips_per_split=clips, seed=seed, gate=vars(gate), problems=problems, forced=bool(force and problems))
    if problems and not force:
        raise _refused(f"{name}@{version} is worse than {name}@{alias} ({before.version})", problems)
    return move_alias(model_uri, alias, version, reason, store, expected=before.revision if before else 0,
                      evaluation=found, passed_gate=not problems)


def _evaluate(model_uri: str, version: str, clips: int, seed: int, clip: EvalClip, progress: Progress | None,
              force: bool) -> dict:
    """`evaluation`, or with `force` the record that none ran when it cannot."""
    try:
        return evaluation(model_uri, version, clips, seed, clip, progress)
    except EvaluationFailed as e:
        if not force:
            raise
        return none_ran(version, str(e))


def _no_quality_measure(version: str) -> str:
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
