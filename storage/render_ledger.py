"""The claim and ledger protocol of bulk render: which run renders a row, and what a row's being done means.

    OUT/claims/<id>.json    {"run", "request", "at"}: the run rendering the row, taken with a conditional put before
                            sampling and removed once the row's record is written; two runs on one OUT never
                            render a row twice
    OUT/videos/<id>.mp4     one per good row, put only if absent (never duplicated or half-written)
    OUT/results/<id>.json   the row's record, written after its video: a row is done for a request (a digest of
                            the model's label, weights digest included, and every resolved setting) when its
                            record names that request; a record of another request (another model, other
                            settings, or a record without one) is rendered again, video and record replaced
    OUT/results.jsonl       every record, rebuilt at the end of each run (see `write_results`); removed before a
                            run replaces any row, so it never vouches for a record that is being replaced
    OUT/errors.jsonl        every row not rendered: {"line", "id", "field", "reason"}
    OUT/trajectories/<id>.npz  sampler states kept for distillation, written before the row's record
    OUT/run.json            what the run was and what it did
    OUT/preview.png         a contact sheet of the first clips, when asked for
    OUT/report.html         every row's video, settings and reason not rendered, when asked for (--report)

A claim older than the run's `claim_timeout_s` belongs to a run that died, and is taken over. A video that run left
without a record is this row's when the claim names the same request (a digest of model and settings), whatever
bytes a re-render would make: sampling is not bit-stable across batchings, and the dead run's video is as good.

Every write that two runs may race for is a conditional put (`ObjectStore.write(if_absent=True)`: S3's
`If-None-Match: *`, a hard link locally), so the protocol holds on a local folder and on S3 alike. No Ray and no
models here: the render job (`jobs/render.py`) calls this from its driver and its actors.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from enum import Enum

from storage.objectstore import AlreadyExists, Location, NotFound, ObjectStore, parse_uri
from storage.package import sha256_bytes

log = logging.getLogger(__name__)
CLAIMS, RECORDS, TRAJECTORIES = "claims", "results", "trajectories"
RESULTS, ERRORS, RUN, PREVIEW = "results.jsonl", "errors.jsonl", "run.json", "preview.png"


class ClaimState(Enum):
    """What taking a row's claim came to."""

    NEW = "new"  # the row is this run's to render
    RECOVERED = "recovered"  # taken over from a dead run that claimed the same request: a video it left is this row's
    HELD = "held"  # another live run holds it (or just finished it): not this run's


@dataclass(frozen=True)
class Claim:
    """A row's claim as stored. An unreadable claim reads as `Claim(None, None, 0.0)`: expired, and nobody's."""

    run: str | None
    request: str | None
    at: float

    @classmethod
    def parse(cls, data: bytes) -> Claim:
        try:
            stored = json.loads(data)
        except ValueError:
            stored = None
        if not isinstance(stored, dict) or not isinstance(stored.get("at", 0), int | float):
            return cls(None, None, 0.0)
        run, request = stored.get("run"), stored.get("request")
        return cls(run if isinstance(run, str) else None, request if isinstance(request, str) else None,
                   stored.get("at", 0))

    def to_json(self) -> bytes:
        return json.dumps({"run": self.run, "request": self.request, "at": self.at}).encode()


@dataclass(frozen=True)
class RenderRecord:
    """A rendered row's ledger record: where its video is, its sha256, the sampling seconds it cost (its share of
    its batch), the model, every resolved setting of the clip (flattened into the record), and the request (the
    digest of model and settings) it was rendered for."""

    id: str
    key: str
    sha256: str
    seconds: float
    model: str
    clip: dict
    request: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "key": self.key, "sha256": self.sha256, "seconds": self.seconds, "model": self.model,
                "request": self.request, **self.clip}


class RenderLedger:
    """One bulk-render output folder (`file://`, a path, or `s3://`): its records and ledgers, its videos."""

    def __init__(self, store: ObjectStore, out: str | Location):
        self.store = store
        self.out = parse_uri(out)

    # --- which rows are done ---

    def done_ids(self) -> set[str]:
        """The ids of rows with a record: one listing, no reads."""
        prefix = self.out.join(RECORDS).uri + "/"
        return {o.uri.removeprefix(prefix).removesuffix(".json") for o in self.store.list(self.out.join(RECORDS))}

    def is_done(self, row_id: str) -> bool:
        return self.store.exists(self._record(row_id))

    def done_requests(self) -> dict[str, str | None]:
        """{id: the request its record was rendered for (None: a record naming none)} of every row with a record.
        results.jsonl answers for the records it lists (a run removes it before replacing any record), the others
        are read: a re-run with nothing to do reads one object."""
        ids = self.done_ids()
        known = self._summarised()
        return {i: _request_of(known[i]) if i in known else self.record_request(i) for i in ids}

    def record_request(self, row_id: str) -> str | None:
        """The request a row's record was rendered for; None when it has no record or the record names none."""
        try:
            return _request_of(json.loads(self.store.read(self._record(row_id))))
        except (NotFound, ValueError):
            return None

    # --- what a rendered row leaves ---

    def put_video(self, key: str, data: bytes, state: ClaimState, replaces: bool = False) -> str | None:
        """Put a row's video at `key` (relative to OUT); its sha256, or None when another video already holds
        the key. A video left there by a dead run counts as this one when the claim was RECOVERED, or when it has
        these very bytes. With `replaces` (the row's record is another request's, and this run holds its claim)
        the video is replaced whatever is there, after results.jsonl is removed (it lists the old record)."""
        location = self.out.join(key)
        digest = sha256_bytes(data)
        if replaces:
            self.forget_results()
            self.store.write(location, data)
            return digest
        try:
            self.store.write(location, data, if_absent=True)
        except AlreadyExists:  # a run died between this row's video and its record
            existing = sha256_bytes(self.store.read(location))
            if state is not ClaimState.RECOVERED and existing != digest:
                return None
            return existing  # made for this very request, whatever bytes this render made
        return digest

    def put_trajectory(self, row_id: str, data: bytes) -> None:
        self.store.write(self.out.join(TRAJECTORIES, f"{row_id}.npz"), data)

    def put_record(self, record: RenderRecord) -> None:
        """The row is done once this is written (after its video)."""
        self.store.write(self._record(record.id), json.dumps(record.to_dict()).encode())

    # --- the run's summaries ---

    def write_results(self, record_ids: set[str], rendered_now: set[str]) -> list[dict]:
        """Rebuild results.jsonl: every record, by id; returns them. The record files are the truth: the previous
        results.jsonl supplies the records that have not changed since (records are written once per render), and
        every record written since, or rewritten by this run's renders, is read. A re-run with nothing to do reads
        one object, not one per row."""
        known = self._summarised()
        for record_id in sorted((record_ids - known.keys()) | (rendered_now & record_ids)):
            known[record_id] = json.loads(self.store.read(self._record(record_id)))
        records = [known[i] for i in sorted(record_ids)]
        self.store.write(self.out.join(RESULTS), "".join(json.dumps(r) + "\n" for r in records).encode())
        return records

    def forget_results(self) -> None:
        """Remove results.jsonl: the next run rebuilds it from the record files."""
        try:
            self.store.delete(self.out.join(RESULTS))
        except NotFound:
            pass

    def _summarised(self) -> dict[str, dict]:
        """{id: record} as results.jsonl lists them (empty when there is none)."""
        try:
            lines = self.store.read(self.out.join(RESULTS)).decode().splitlines()
        except NotFound:
            return {}
        return {record["id"]: record for record in map(json.loads, lines)}

    def write_errors(self, lines: list[str]) -> None:
        """errors.jsonl: one JSON object ({"line", "id", "field", "reason"}) a row not rendered, in the order given."""
        self.store.write(self.out.join(ERRORS), "".join(line + "\n" for line in lines).encode())

    def write_run(self, summary: dict) -> None:
        self.store.write(self.out.join(RUN), json.dumps(summary, indent=1).encode())

    def write_preview(self, png: bytes) -> None:
        self.store.write(self.out.join(PREVIEW), png)

    def _record(self, row_id: str) -> Location:
        return self.out.join(RECORDS, f"{row_id}.json")


def _request_of(record: dict) -> str | None:
    request = record.get("request")
    return request if isinstance(request, str) and request else None


class RowClaims:
    """One run's claims on the rows of a render output folder: take one before sampling a row, check it still holds
    before writing the row, release it once the row is written (or given up)."""

    def __init__(self, ledger: RenderLedger, run_id: str, timeout_s: float):
        self.store, self.out = ledger.store, ledger.out
        self.run_id, self.timeout_s = run_id, timeout_s

    def take(self, row_id: str, request: str) -> ClaimState:
        """Claim a row for `request` (the digest of what will be sampled). A claim of another run older than
        `timeout_s` is taken over: that run died."""
        mine = Claim(self.run_id, request, time.time()).to_json()
        try:
            self.store.write(self._key(row_id), mine, if_absent=True)
            return ClaimState.NEW
        except AlreadyExists:
            pass
        theirs = self.read(row_id)
        if theirs is None:  # finished (or given up) just now; its record decides
            return ClaimState.HELD
        if theirs.run != self.run_id and time.time() - theirs.at < self.timeout_s:
            return ClaimState.HELD
        self.release(row_id)
        try:
            self.store.write(self._key(row_id), mine, if_absent=True)
        except AlreadyExists:  # another run took it over first
            return ClaimState.HELD
        if theirs.run != self.run_id:
            log.info("row %s: took over the claim run %s made %.0f s ago", row_id, theirs.run, time.time() - theirs.at)
        return ClaimState.RECOVERED if theirs.request == request else ClaimState.NEW

    def holds(self, row_id: str) -> bool:
        """Whether the row's claim is still this run's (a run too slow for `timeout_s` loses its rows)."""
        claim = self.read(row_id)
        return claim is not None and claim.run == self.run_id

    def read(self, row_id: str) -> Claim | None:
        """A row's claim; None when there is none."""
        try:
            return Claim.parse(self.store.read(self._key(row_id)))
        except NotFound:
            return None

    def release(self, row_id: str) -> None:
        try:
            self.store.delete(self._key(row_id))
        except NotFound:
            pass

    def _key(self, row_id: str) -> Location:
        return self.out.join(CLAIMS, f"{row_id}.json")
