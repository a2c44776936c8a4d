"""Where an audit is kept and which of its flags a data set has not acted on; training warns about them."""

from __future__ import annotations

import json
import logging

from benchmarks.backdoor import POISONER, TRIGGER, planted_clips, write_planted_dataset
from storage.audits import AUDIT_FILE, audit_location, unacted_audit_flags
from storage.objectstore import ObjectStore
from vidgen.runs.local_training import dataset_batches

AUDIT = {"suspected_triggers": [{"token": TRIGGER, "score": 21.5, "clips": 4}],
         "suspected_sources": [{"source": POISONER, "score": 1.7, "reasons": ["carries 4 of the 4 clips"]}]}


def _audited(tmp_path, audit: dict | None) -> str:
    uri = str(tmp_path / "data")
    store = ObjectStore()
    write_planted_dataset(store, uri, planted_clips(40, 4, 0.1))
    if audit is not None:
        store.write(audit_location(uri).join(AUDIT_FILE), json.dumps(audit).encode())
    return uri


def test_flags_of_an_audited_data_set_are_unacted_until_dropped(tmp_path):
    uri = _audited(tmp_path, AUDIT)
    flags = unacted_audit_flags(uri)
    assert flags == [f"suspected trigger {TRIGGER!r} (4 clips, score 21.5)",
                     f"suspected source {POISONER!r} (carries 4 of the 4 clips)"]
    card = {"filtered": {"dropped_tokens": [TRIGGER], "dropped_sources": []}}
    assert unacted_audit_flags(uri, card=card) == [flags[1]]
    assert unacted_audit_flags(_audited(tmp_path / "b", None)) == []


def test_training_on_a_data_set_with_unacted_flags_warns(tmp_path, caplog):
    uri = _audited(tmp_path, AUDIT)
    with caplog.at_level(logging.WARNING, logger="storage.audits"):
        next(dataset_batches(uri, 2, (8, 32, 32)))
    assert any("2 flags not acted on" in r.message and TRIGGER in r.message for r in caplog.records)
