"""A serving tier whose model is an alias (or `@latest`): which references move, what they name now, the back-off
of a follower that cannot load the version it names, and the automatic rollback a replica makes when its clips
regress (`storage.aliases`: compare-and-swap, one replica wins; to the newest version that passed the promotion
gate, at most once per `QualityProbe.min_rollback_interval_s` per alias, whichever tier or replica asks).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from storage.aliases import AliasConflict, history, move_alias, rollback_target
from storage.registry import parse_ref, resolve

AUTOMATIC_ROLLBACK = "automatic-rollback"
# The longest a follower waits before trying a version it failed to load again: each try pulls and hashes the
# whole model (gigabytes for a diffusers one), so a broken version must not cost that every poll.
FOLLOW_RETRY_CAP_S = 900.0

log = logging.getLogger(__name__)


def following(ref: str) -> bool:
    """Whether a model reference moves: a registry reference naming an alias or `latest`, not a pinned vN."""
    if "@" not in ref:
        return False
    version = ref.rpartition("@")[2]
    return not (version.startswith("v") and version[1:].isdigit())


def follows_latest(ref: str) -> bool:
    """Whether a model reference follows `@latest` (the newest version: no alias, nothing to roll back)."""
    return "@" in ref and ref.rpartition("@")[2] == "latest"


def resolved_version(ref: str) -> str:
    """The version a moving reference names now (one listing of the registry)."""
    return resolve(ref).version


def label_version(label: str) -> str:
    """`vN` of a label `NAME@vN#digest`."""
    return label.partition("@")[2].partition("#")[0]


@dataclass
class FollowFailures:
    """The version a follower last failed to load and when it may try it again: the wait doubles with each failure
    of the same version, from the poll interval up to `cap_s`; a new version is tried at once."""

    poll_s: float
    cap_s: float = FOLLOW_RETRY_CAP_S
    version: str | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str | None = None

    def should_load(self, version: str, now: float) -> bool:
        return version != self.version or now >= self.retry_at

    def failed(self, version: str, error: str, now: float) -> float:
        """Record a failed load of `version`; the seconds until it is tried again."""
        self.failures = self.failures + 1 if version == self.version else 1
        self.version, self.error = version, error
        wait = min(self.poll_s * 2 ** self.failures, self.cap_s)
        self.retry_at = now + wait
        return wait

    def loaded(self) -> None:
        self.version, self.failures, self.retry_at, self.error = None, 0, 0.0, None

    def report(self) -> str | None:
        """One line for the tier report while a version keeps failing, else None."""
        if self.version is None:
            return None
        return f"cannot load {self.version} ({self.failures} tries): {self.error}"


def roll_back_alias(ref: str, label: str, reason: str, by: str, min_interval_s: float,
                    now: float | None = None) -> str | None:
    """Move the alias `ref` names to the newest version that passed the gate, if it still names the version of
    `label` and no automatic rollback of the alias happened in the last `min_interval_s`; the version it moved to,
    or None (nothing to go back to, too soon, or another replica or a person moved it first)."""
    if follows_latest(ref):  # refused at config time (`TierConfig`); `latest` is no alias to move
        return None
    model = parse_ref(ref)
    records = history(model.model_uri, model.version)
    if not records or records[-1].version != label_version(label):
        return None
    if automatic_rollback_too_soon(records, min_interval_s, time.time() if now is None else now):
        log.warning("%s regressed but was rolled back automatically less than %.0f s ago: not again (roll it back "
                    "by hand with `vidgen models rollback`)", ref, min_interval_s)
        return None
    target = rollback_target(records)
    if target is None:
        log.warning("%s regressed but has no other version that passed the promotion gate to roll back to", ref)
        return None
    try:
        return move_alias(model.model_uri, model.version, target, reason, expected=records[-1].revision,
                          kind=AUTOMATIC_ROLLBACK, by=by).version
    except AliasConflict:
        return None


def automatic_rollback_too_soon(records, min_interval_s: float, now: float) -> bool:
    """Whether the alias's last automatic rollback is less than `min_interval_s` old."""
    last = next((r.at for r in reversed(records) if r.kind == AUTOMATIC_ROLLBACK), None)
    return last is not None and now - last < min_interval_s
