"""Eval-gated promotion and rollback of registry aliases (`vidgen models promote|rollback|history`).

A promotion evaluates the candidate and the alias's current version on the same prompts and seeds
(`vidgen.runs.eval_runs.evaluate_model`: prompt accuracy on seen and held-out compositions where the built-in
world applies, and seconds per clip), and moves the alias (`storage.aliases`, compare-and-swap) only if the
candidate is not worse beyond the gate's tolerances; the evaluation of both is stored in the alias's history.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.aliases import AliasRecord, current, move_alias
from storage.objectstore import ObjectStore, StorageError
from storage.registry import model_location, resolve
from storage.user_state import registry_root
from vidgen.runs.eval_runs import evaluate_model

GATED_SPLITS = ("seen", "heldout")


class GateRefused(StorageError):
    """The candidate is worse than the alias's current version beyond the gate's tolerances."""


@dataclass(frozen=True)
class Gate:
    """How much worse a candidate may be than the version it replaces."""

    accuracy_drop: float = 0.05  # of prompt accuracy (all three), per split
    slowdown: float = 1.5  # seconds per clip, as a ratio


def evaluation(model_uri: str, version: str, clips: int, seed: int) -> dict:
    """What the gate compares, for one version (the same prompts and seeds for every version)."""
    result = evaluate_model(f"{model_uri}@{version}", clips, seed)
    facts = {"version": version, "label": result["model"], "seconds_per_clip": round(result["seconds_per_clip"], 4)}
    if "seen" in result:
        facts["prompt_accuracy"] = {split: round(result[split]["all_three"], 3) for split in GATED_SPLITS}
    return facts


def gate_problems(candidate: dict, incumbent: dict, gate: Gate) -> list[str]:
    """Why the candidate may not replace the incumbent (empty: it may)."""
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
            store: ObjectStore | None = None, clips: int = 32, seed: int = 0, gate: Gate = Gate()) -> AliasRecord:
    """Evaluate NAME@version against NAME@alias and move the alias to it if the gate lets it (or `force`)."""
    store = store or ObjectStore()
    model_uri = model_location(root or registry_root(), name).uri
    version = resolve(f"{model_uri}@{version}", store=store).version
    before = current(model_uri, alias, store)
    if before is not None and before.version == version:
        raise StorageError(f"{name}@{alias} already names {version}")
    found = {"candidate": evaluation(model_uri, version, clips, seed)}
    problems = []
    if before is not None:
        found["current"] = evaluation(model_uri, before.version, clips, seed)
        problems = gate_problems(found["candidate"], found["current"], gate)
    found.update(clips_per_split=clips, seed=seed, gate=vars(gate), problems=problems, forced=bool(force and problems))
    if problems and not force:
        raise GateRefused(f"{name}@{version} is worse than {name}@{alias} ({before.version}): "
                          f"{'; '.join(problems)}. Nothing moved; --force to promote anyway (recorded)")
    return move_alias(model_uri, alias, version, reason, store, expected=before.revision if before else 0,
                      evaluation=found)


def rollback(name: str, alias: str, reason: str, root: str | None = None, store: ObjectStore | None = None,
             kind: str = "rollback") -> AliasRecord:
    """Move the alias back to the version it named before its last move."""
    store = store or ObjectStore()
    model_uri = model_location(root or registry_root(), name).uri
    before = current(model_uri, alias, store)
    if before is None or before.previous is None:
        raise StorageError(f"{name}@{alias} has no previous version to roll back to")
    return move_alias(model_uri, alias, before.previous, reason, store, expected=before.revision, kind=kind)
