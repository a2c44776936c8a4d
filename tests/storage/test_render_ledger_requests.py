"""A row is done only for the request its record names: the ledger reports each record's request (from
results.jsonl where it can), and a row re-rendered for another request replaces its video and drops the summary
that still names the old record. Without Ray, on a local folder and on the loopback S3."""

import hashlib

from storage.render_ledger import ClaimState, RenderLedger, RenderRecord
from tests.storage.test_render_ledger import CountingStore


def _record(row_id: str, data: bytes, model: str, request: str) -> RenderRecord:
    return RenderRecord(row_id, f"videos/{row_id}.mp4", hashlib.sha256(data).hexdigest(), 0.25, model,
                        {"prompt": "a red square", "seed": 1, "steps": 2}, request)


def test_each_record_names_the_request_it_was_rendered_for(store_root):
    store, root = store_root
    counting = CountingStore(store)
    ledger = RenderLedger(counting, root)
    for row_id in ("a", "b"):
        ledger.put_record(_record(row_id, row_id.encode(), "first#111", "request-of-first"))
    store.write(f"{root}/results/old.json", b'{"id": "old", "key": "videos/old.mp4", "model": "m"}')  # no request
    assert ledger.done_requests() == {"a": "request-of-first", "b": "request-of-first", "old": None}
    ledger.write_results(ledger.done_ids(), {"a", "b"})
    counting.reads.clear()
    assert ledger.done_requests()["a"] == "request-of-first"
    assert [uri.rsplit("/", 1)[-1] for uri in counting.reads] == ["results.jsonl"]  # no record read


def test_a_row_rendered_for_another_request_is_replaced_and_the_summary_forgotten(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    assert ledger.put_video("videos/a.mp4", b"first model", ClaimState.NEW) is not None
    ledger.put_record(_record("a", b"first model", "first#111", "request-of-first"))
    ledger.write_results(ledger.done_ids(), {"a"})
    assert ledger.put_video("videos/a.mp4", b"second model", ClaimState.NEW) is None  # never replaced by accident
    digest = ledger.put_video("videos/a.mp4", b"second model", ClaimState.NEW, replaces=True)
    assert digest == hashlib.sha256(b"second model").hexdigest()
    assert store.read(f"{root}/videos/a.mp4") == b"second model"
    assert not store.exists(f"{root}/results.jsonl")  # it vouched for the first model's record
    assert ledger.done_requests() == {"a": "request-of-first"}  # from the record itself, until it is replaced
    ledger.put_record(_record("a", b"second model", "second#222", "request-of-second"))
    records = ledger.write_results(ledger.done_ids(), {"a"})
    assert [(r["model"], r["request"], r["sha256"]) for r in records] == [("second#222", "request-of-second", digest)]
