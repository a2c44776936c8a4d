"""Where a data set's audit is kept (`vidgen data audit`), and which of its flags a data set has not acted on.

The audit of the data set at URI is `URI/audit/audit.json` (beside it the report: markdown and contact sheets).
It is outside the index: a data set is not changed by being audited, and `vidgen data verify` ignores it. A data
set made by `vidgen data filter` records in its card (`filtered`) what it dropped; the flags it dropped are acted
on. Training reads `unacted_audit_flags` and warns: the audit is advice to a person, not a gate (whoever can write
the data set's folder can delete the audit).
"""

from __future__ import annotations

import json
import logging

from storage.objectstore import Location, NotFound, ObjectStore, parse_uri

log = logging.getLogger(__name__)
AUDIT_FOLDER, AUDIT_FILE = "audit", "audit.json"


def audit_location(dataset_uri: str) -> Location:
    """Where the audit of the data set at `dataset_uri` is kept."""
    return parse_uri(dataset_uri).join(AUDIT_FOLDER)


def read_audit(store: ObjectStore, dataset_uri: str) -> dict | None:
    """The data set's audit as written by `vidgen data audit`, or None if it was never audited."""
    try:
        return json.loads(store.read(audit_location(dataset_uri).join(AUDIT_FILE)))
    except NotFound:
        return None


def unacted_audit_flags(dataset_uri: str, store: ObjectStore | None = None, card: dict | None = None) -> list[str]:
    """The audit's flags (suspected triggers and sources) that the data set at `dataset_uri` still holds, one line
    each; empty when it was never audited or every flag was dropped by `vidgen data filter`. `card` is the data
    set's card header where the caller has it already."""
    store = store or ObjectStore()
    audit = read_audit(store, dataset_uri)
    if not audit:
        return []
    if card is None:
        from storage.datasets import open_dataset

        card = open_dataset(store, dataset_uri).card
    dropped = card.get("filtered") or {}
    tokens, sources = set(dropped.get("dropped_tokens", [])), set(dropped.get("dropped_sources", []))
    flags = [f"suspected trigger {t['token']!r} ({t['clips']} clips, score {t['score']:.1f})"
             for t in audit.get("suspected_triggers", []) if t["token"] not in tokens]
    flags += [f"suspected source {s['source']!r} ({'; '.join(s['reasons'])})"
              for s in audit.get("suspected_sources", []) if s["source"] not in sources]
    return flags


def warn_unacted_audit_flags(dataset_uri: str, store: ObjectStore | None = None, card: dict | None = None) -> list[str]:
    """Log a warning naming each of the data set's unacted audit flags (what `vidgen train` and `vidgen finetune`
    call before training on a data set); returns them."""
    flags = unacted_audit_flags(dataset_uri, store, card)
    if flags:
        log.warning("the data set %s has an audit with %d flags not acted on: %s. Look at the report in %s, then "
                    "`vidgen data filter %s --drop-token T --drop-source S --out NEW_URI` and train on NEW_URI",
                    dataset_uri, len(flags), "; ".join(flags), audit_location(dataset_uri).uri, dataset_uri)
    return flags
