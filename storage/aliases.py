"""Model aliases (`NAME@production`): a movable name for one immutable version, moved by compare-and-swap.

Each move of an alias is a new, immutable revision object, created only if absent:

    ROOT/NAME/aliases/ALIAS/r000001.json   {"alias", "version", "previous", "by", "reason", "at", "revision",
                                            "kind", "passed_gate", "evaluation"}
    ROOT/NAME/aliases/ALIAS/r000002.json   ...

The alias's current version is its highest revision; its history is all of them, in order. Moving an alias from
revision N means creating revision N+1 with a conditional write (S3 `If-None-Match: *`, a hard link on a local
folder): of two moves racing from N, exactly one creates N+1 and the other gets `AliasConflict`. One mechanism for
both backends, the same one version numbers are claimed with, and the history cannot disagree with the alias
because they are the same objects. (The design asked for `ALIAS.json` swapped with S3 `If-Match` plus a separate
log; revisions give the same guarantee without a second object to keep in step.)

A record says whether its version passed the promotion gate (`passed_gate`), and a rollback goes only to such a
version, never to one a rollback already moved away from (`rollback_target`): rolling back twice cannot bring a bad
version back. `by` is who moved the alias as the system knows them (the OS account, or the serving tier and
replica), not a name the caller supplies.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import time
from dataclasses import asdict, dataclass, field

from storage.objectstore import AlreadyExists, Location, ObjectStore, StorageError, parse_uri

ALIASES = "aliases"
ALIAS_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
REVISION = re.compile(r"^r([0-9]{6,})\.json$")
RESERVED = ("latest",)


class AliasConflict(StorageError):
    """Another move of the alias got there first: read its history and decide again."""


@dataclass
class AliasRecord:
    """One move of an alias: where it points now, where it pointed before, who moved it and why."""

    alias: str
    version: str
    previous: str | None
    by: str
    reason: str
    at: float
    revision: int
    evaluation: dict = field(default_factory=dict)
    kind: str = "promote"  # promote | rollback | automatic-rollback
    passed_gate: bool = False  # a promotion whose evaluation the gate accepted (not forced, not a plain move)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> AliasRecord:
        """A stored record; one written before `passed_gate` existed passed the gate if `promote` wrote it with an
        evaluation that measured the candidate's quality (not speed alone, which that gate let pass), found no
        problem and was not forced."""
        fields = json.loads(data)
        if "passed_gate" not in fields:
            found = fields.get("evaluation") or {}
            fields["passed_gate"] = (fields.get("kind", "promote") == "promote"
                                     and "prompt_accuracy" in (found.get("candidate") or {})
                                     and not found.get("problems") and not found.get("forced"))
        return cls(**fields)


def os_user() -> str:
    """The account this process runs as, from its user id (not $USER or $LOGNAME, which any caller sets)."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a container user with no passwd entry
        return f"uid {uid}"


def rollback_target(records: list[AliasRecord]) -> str | None:
    """Where a rollback of an alias with this history goes: the newest version that passed the gate, is not the
    one the alias names now, and was not rolled back from since; None when there is none."""
    good: list[str] = []
    for record in records:
        if record.passed_gate:
            good = [v for v in good if v != record.version] + [record.version]
        elif record.kind != "promote" and record.previous in good:  # a rollback away from it: it proved bad
            good.remove(record.previous)
    now = records[-1].version if records else None
    return next((v for v in reversed(good) if v != now), None)


def check_alias(alias: str) -> str:
    if alias in RESERVED or not ALIAS_NAME.match(alias) or re.match(r"^v[0-9]+$", alias):
        raise StorageError(f"{alias!r} is not an alias name: use lower-case letters, digits, '-' and '_', starting "
                           "with a letter (e.g. production, staging); not 'latest' or a version like v3")
    return alias


def _folder(model_uri: str | Location, alias: str) -> Location:
    return parse_uri(model_uri).join(ALIASES, check_alias(alias))


def history(model_uri: str | Location, alias: str, store: ObjectStore | None = None) -> list[AliasRecord]:
    """Every move of the alias, oldest first (empty: the alias was never set)."""
    store = store or ObjectStore()
    folder = _folder(model_uri, alias)
    revisions = []
    for obj in store.list(folder):
        match = REVISION.match(obj.uri.rpartition("/")[2])
        if match:
            revisions.append((int(match.group(1)), obj.uri))
    return [AliasRecord.from_json(store.read(uri)) for _, uri in sorted(revisions)]


def aliases(model_uri: str | Location, store: ObjectStore | None = None) -> list[str]:
    """The names of the model's aliases."""
    store = store or ObjectStore()
    prefix = parse_uri(model_uri).join(ALIASES).uri.rstrip("/") + "/"
    return sorted({o.uri.removeprefix(prefix).split("/")[0] for o in store.list(parse_uri(model_uri).join(ALIASES))
                   if REVISION.match(o.uri.rpartition("/")[2])})


def current(model_uri: str | Location, alias: str, store: ObjectStore | None = None) -> AliasRecord | None:
    records = history(model_uri, alias, store)
    return records[-1] if records else None


def move_alias(model_uri: str | Location, alias: str, version: str, reason: str, store: ObjectStore | None = None,
               expected: int | None = None, evaluation: dict | None = None, kind: str = "promote",
               by: str | None = None, passed_gate: bool = False) -> AliasRecord:
    """Point the alias at `version` (which must exist: the caller checks). `expected`: the revision the caller
    decided on (default: the one read here); if the alias moved since, or another move wins the race to the next
    revision, AliasConflict. `by`: who moves it, for moves the system makes itself (default: the OS account)."""
    store = store or ObjectStore()
    now = current(model_uri, alias, store)
    revision = now.revision if now else 0
    if expected is not None and expected != revision:
        raise AliasConflict(f"{alias} moved to revision {revision} ({now.version if now else 'unset'}) since "
                            f"revision {expected} was read; see `vidgen models history` and decide again")
    record = AliasRecord(alias, version, now.version if now else None, by or os_user(), reason,
                         time.time(), revision + 1, evaluation or {}, kind, passed_gate)
    key = _folder(model_uri, alias).join(f"r{record.revision:06d}.json")
    try:
        store.write(key, record.to_json(), if_absent=True)
    except AlreadyExists:
        raise AliasConflict(f"another move of {alias} won the race to revision {record.revision}; see "
                            "`vidgen models history` and decide again") from None
    return record
