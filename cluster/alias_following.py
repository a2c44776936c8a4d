"""A serving tier whose model is an alias (or `@latest`): which references move, what they name now, and the
automatic rollback a replica makes when its clips regress (`storage.aliases`: compare-and-swap, one replica wins).
"""

from __future__ import annotations

from storage.aliases import AliasConflict, current, move_alias
from storage.registry import parse_ref, resolve


def following(ref: str) -> bool:
    """Whether a model reference moves: a registry reference naming an alias or `latest`, not a pinned vN."""
    if "@" not in ref:
        return False
    version = ref.rpartition("@")[2]
    return not (version.startswith("v") and version[1:].isdigit())


def resolved_version(ref: str) -> str:
    """The version a moving reference names now (one listing of the registry)."""
    return resolve(ref).version


def label_version(label: str) -> str:
    """`vN` of a label `NAME@vN#digest`."""
    return label.partition("@")[2].partition("#")[0]


def roll_back_alias(ref: str, label: str, reason: str) -> str | None:
    """Move the alias `ref` names back to its previous version if it still names the version of `label`; the
    version it moved to, or None when another replica (or a person) moved it first."""
    model = parse_ref(ref)
    record = current(model.model_uri, model.version)
    if record is None or record.previous is None or record.version != label_version(label):
        return None
    try:
        return move_alias(model.model_uri, model.version, record.previous, reason, expected=record.revision,
                          kind="automatic-rollback", by="vidgen serving").version
    except AliasConflict:
        return None
