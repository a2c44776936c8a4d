"""The render claim and ledger protocol, without Ray, on a local folder and on the loopback S3: one run per row,
claims of dead runs taken over, left-over videos kept only for the same request, ledgers rebuilt from the records."""

import hashlib
import json
import threading
import time

from storage.objectstore import ObjectStore
from storage.render_ledger import Claim, ClaimState, RenderLedger, RenderRecord, RowClaims


def _record(row_id: str, data: bytes, steps: int = 2) -> RenderRecord:
    return RenderRecord(row_id, f"videos/{row_id}.mp4", hashlib.sha256(data).hexdigest(), 0.25, "m@v1#abc",
                        {"prompt": "a red square", "seed": 1, "steps": steps})


def test_a_row_is_claimed_by_one_run_until_released(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    first, second = RowClaims(ledger, "run-a", 60), RowClaims(ledger, "run-b", 60)
    assert first.take("r1", "req") is ClaimState.NEW
    assert second.take("r1", "req") is ClaimState.HELD and first.holds("r1") and not second.holds("r1")
    claim = json.loads(store.read(f"{root}/claims/r1.json"))
    assert (claim["run"], claim["request"]) == ("run-a", "req") and claim["at"] <= time.time()
    first.release("r1")
    first.release("r1")  # releasing twice is harmless
    assert first.read("r1") is None and second.take("r1", "req") is ClaimState.NEW


def test_racing_runs_get_one_claim_between_them(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    barrier, outcomes = threading.Barrier(4), []

    def take(run_id):
        barrier.wait()
        outcomes.append(RowClaims(ledger, run_id, 60).take("r1", "req"))

    threads = [threading.Thread(target=take, args=(f"run-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.value for o in outcomes) == ["held", "held", "held", "new"]


def test_a_dead_runs_claim_is_taken_over_after_the_timeout(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    claims = RowClaims(ledger, "run-b", timeout_s=30)
    for row_id, age, request in (("fresh", 5, "req"), ("same", 40, "req"), ("other", 40, "old-req")):
        store.write(f"{root}/claims/{row_id}.json", Claim("run-a", request, time.time() - age).to_json())
    assert claims.take("fresh", "req") is ClaimState.HELD  # run-a may still be rendering it
    assert claims.take("same", "req") is ClaimState.RECOVERED  # a video run-a left is this row's
    assert claims.take("other", "req") is ClaimState.NEW  # run-a was asked for something else
    assert claims.read("same").run == "run-b" and claims.read("other").request == "req"
    slow = RowClaims(ledger, "run-a", timeout_s=30)
    assert not slow.holds("same")  # the slow run learns it lost the row before writing it


def test_an_unreadable_claim_is_an_expired_one_of_nobody(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    for row_id, data in (("garbled", b"{not json"), ("listed", b"[1, 2]"), ("bad-time", b'{"run": "x", "at": "now"}')):
        store.write(f"{root}/claims/{row_id}.json", data)
        assert RowClaims(ledger, "run-b", 3600).take(row_id, "req") is ClaimState.NEW
    assert Claim.parse(b'{"run": 7, "request": "req", "at": 1}') == Claim(None, "req", 1)


def test_a_left_over_video_counts_only_for_the_same_request_or_the_same_bytes(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    first = ledger.put_video("videos/a.mp4", b"the dead run's bytes", ClaimState.NEW)
    assert first == _record("a", b"the dead run's bytes").sha256
    assert ledger.put_video("videos/a.mp4", b"the dead run's bytes", ClaimState.NEW) == first  # same bytes
    assert ledger.put_video("videos/a.mp4", b"other bytes", ClaimState.NEW) is None  # someone else's video
    assert ledger.put_video("videos/a.mp4", b"other bytes", ClaimState.RECOVERED) == first  # kept, not replaced
    assert store.read(f"{root}/videos/a.mp4") == b"the dead run's bytes"


class CountingStore(ObjectStore):
    def __init__(self, store: ObjectStore):
        super().__init__(store.s3)
        self.reads: list[str] = []

    def read(self, uri):
        self.reads.append(str(uri))
        return super().read(uri)


def test_the_ledger_is_rebuilt_from_the_records_reading_only_what_changed(store_root):
    store, root = store_root
    counting = CountingStore(store)
    ledger = RenderLedger(counting, root)
    assert ledger.done_ids() == set() and not ledger.is_done("a")
    for row_id in ("b", "a"):
        ledger.put_record(_record(row_id, row_id.encode()))
    assert ledger.done_ids() == {"a", "b"} and ledger.is_done("a")
    first = ledger.write_results(ledger.done_ids(), {"a", "b"})
    assert [r["id"] for r in first] == ["a", "b"] and first[0] == _record("a", b"a").to_dict()
    assert first[0]["prompt"] == "a red square" and first[0]["steps"] == 2  # the clip's settings, flattened
    assert [json.loads(line) for line in store.read(f"{root}/results.jsonl").decode().splitlines()] == first

    counting.reads.clear()
    assert ledger.write_results(ledger.done_ids(), set()) == first  # nothing new: results.jsonl only
    assert [uri.rsplit("/", 1)[-1] for uri in counting.reads] == ["results.jsonl"]

    ledger.put_record(_record("a", b"a", steps=3))  # re-rendered with other settings
    ledger.put_record(_record("c", b"c"))  # written by another run since
    counting.reads.clear()
    records = ledger.write_results(ledger.done_ids(), {"a"})
    assert [(r["id"], r["steps"]) for r in records] == [("a", 3), ("b", 2), ("c", 2)]
    assert sorted(uri.rsplit("/", 1)[-1] for uri in counting.reads) == ["a.json", "c.json", "results.jsonl"]


def test_errors_run_and_preview_land_where_the_layout_says(store_root):
    store, root = store_root
    ledger = RenderLedger(store, root)
    ledger.write_errors([json.dumps({"line": 3, "id": "x", "field": "tier", "reason": "r"})])
    ledger.write_run({"rows": 1})
    ledger.write_preview(b"png")
    ledger.put_trajectory("x", b"npz")
    assert store.read(f"{root}/errors.jsonl") == b'{"line": 3, "id": "x", "field": "tier", "reason": "r"}\n'
    assert json.loads(store.read(f"{root}/run.json")) == {"rows": 1}
    assert store.read(f"{root}/preview.png") == b"png" and store.read(f"{root}/trajectories/x.npz") == b"npz"
