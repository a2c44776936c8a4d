"""Asynchronous renders: each one's record (and, once completed, its MP4 and a JPEG thumbnail) kept in object
storage under `renders_uri`, so any router replica can answer for any render.

A queued or running render has a lease its router renews while it renders; a router that stops (a crash, a
restart, a scale-down) renews nothing, so whoever reads an active record whose lease has lapsed records it failed:
every render ends completed or failed within one lease. Render ids are `video_`, the creation time (10 hex digits),
then 128 random bits (unguessable), so a render's expiry (`expires_at`: creation + retention) is known from its id: an
expired render is not there for anyone (404, not listed) from that second, and a sweep deletes its files from the
listing alone. A deleted render keeps a tombstone record (answered 404) until the sweep, so a router still rendering
it sees the deletion and stops. An `Idempotency-Key` is bound, per caller, to the first render made with it and the
digest of its request (`idempotency/<sha256>.json`, written create-only), and swept with that render.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import time

from cluster.api import RenderStatus
from storage.objectstore import AlreadyExists, NotFound, ObjectStore, parse_uri


class UnknownRender(KeyError):
    """No render of that id."""


LAPSED = "the router that was rendering it stopped before it finished; submit the request again"


RENDER_ID = re.compile(r"video_[0-9a-f]{42}")
SPRITESHEET = ".sprites.jpg"
SUFFIXES = (".json", ".mp4", ".jpg", SPRITESHEET)


def new_render_id(now: float | None = None) -> str:
    """`video_` and 42 hex digits: the creation time in seconds (10), then 32 random ones."""
    return f"video_{int(time.time() if now is None else now):010x}{secrets.token_hex(16)}"


def created_at(render_id: str) -> float:
    return float(int(render_id.removeprefix("video_")[:10], 16))


def expired(render_id: str, retention_s: float, now: float | None = None) -> bool:
    """Whether the render is past its `expires_at` (its creation + `retention_s`)."""
    return created_at(render_id) + retention_s <= (time.time() if now is None else now)


class AsyncRenderStore:
    """`<renders_uri>/<id>.json` (a RenderStatus), `<id>.mp4`, `<id>.jpg` and `<id>.sprites.jpg`, and
    `idempotency/`; blocking I/O runs off the loop, but for records in a local folder (`_record_io`)."""

    def __init__(self, renders_uri: str, store: ObjectStore | None = None):
        self.root = parse_uri(renders_uri)
        self.store = store or ObjectStore()

    async def _record_io(self, fn, *args):
        """Record-sized I/O (a status, an Idempotency-Key binding): inline in a local folder, where writing ~1 KB
        takes ~0.1 ms and a hop to a thread cost a create ~3 ms at p50 and ~13 ms at p99 on 2 loaded cores (the
        GIL handed back and forth; benchmarks/serve.py (e)); off the loop on S3, where a request takes tens of ms."""
        if self.root.scheme == "file":
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def read_current(self, render_id: str) -> RenderStatus:
        """The record, with an active render whose lease has lapsed recorded (and returned) as failed."""
        status = await self.read_status(render_id)
        if status.active and status.lease_until is not None and status.lease_until < time.time():
            status = status.model_copy(update={"status": "failed", "error": LAPSED, "error_code": "lease_lapsed",
                                               "lease_until": None, "completed_at": time.time()})
            await self.write_status(status)
        return status

    async def sweep(self, retention_s: float) -> int:
        """Delete the files of every render past its retention, and the Idempotency-Keys bound to them; returns how
        many files went."""
        def sweep() -> int:
            now, prefix, deleted = time.time(), self.root.uri.rstrip("/") + "/", 0
            for obj in self.store.list(self.root):
                name = obj.uri.removeprefix(prefix)
                render_id = self._bound_render(obj.uri) if name.startswith("idempotency/") else name.split(".")[0]
                if render_id is not None and RENDER_ID.fullmatch(render_id) and expired(render_id, retention_s, now):
                    try:
                        self.store.delete(obj.uri)
                        deleted += 1
                    except NotFound:  # another router replica swept it first
                        pass
            return deleted

        return await asyncio.to_thread(sweep)

    def _bound_render(self, uri: str) -> str | None:
        """The render an idempotency record binds its key to (None: gone meanwhile, or not one)."""
        try:
            return str(json.loads(self.store.read(uri))["id"])
        except (NotFound, ValueError, KeyError, TypeError):
            return None

    def uri(self, render_id: str, suffix: str) -> str:
        return self.root.join(f"{render_id}{suffix}").uri

    async def write_status(self, status: RenderStatus) -> None:
        data = status.model_dump_json(indent=2).encode()
        await self._record_io(self.store.write, self.uri(status.id, ".json"), data)

    async def write_outputs(self, render_id: str, mp4: bytes, jpeg: bytes, spritesheet: bytes) -> None:
        """The video, its thumbnail and its spritesheet, in one trip off the loop."""
        def write():
            for suffix, data in ((".mp4", mp4), (".jpg", jpeg), (SPRITESHEET, spritesheet)):
                self.store.write(self.uri(render_id, suffix), data)

        await asyncio.to_thread(write)

    async def read_status(self, render_id: str) -> RenderStatus:
        try:
            data = await self._record_io(self.store.read, self.uri(render_id, ".json"))
        except NotFound:
            raise UnknownRender(render_id) from None
        return RenderStatus.model_validate_json(data)

    async def read_video(self, render_id: str, suffix: str = ".mp4") -> bytes:
        return await asyncio.to_thread(self.store.read, self.uri(render_id, suffix))

    async def records(self, owner: str, retention_s: float) -> list[RenderStatus]:
        """`owner`'s renders neither deleted nor expired, oldest first."""
        def read_all() -> list[RenderStatus]:
            prefix, found = self.root.uri.rstrip("/") + "/", []
            for obj in self.store.list(self.root):
                name = obj.uri.removeprefix(prefix)
                if name.endswith(".json") and RENDER_ID.fullmatch(name.removesuffix(".json")):
                    try:
                        found.append(RenderStatus.model_validate_json(self.store.read(obj.uri)))
                    except NotFound:  # swept meanwhile
                        continue
            return [r for r in found if r.owner == owner and not r.deleted and not expired(r.id, retention_s)]

        return sorted(await asyncio.to_thread(read_all), key=lambda r: (r.created_at, r.id))

    async def delete(self, status: RenderStatus) -> RenderStatus:
        """Record the render deleted (a tombstone the sweep removes) and remove its video and thumbnail."""
        tombstone = status.model_copy(update={"deleted": True, "lease_until": None})
        await self.write_status(tombstone)
        await self.remove_outputs(status.id)
        return tombstone

    async def remove_outputs(self, render_id: str) -> None:
        def remove():
            for suffix in SUFFIXES[1:]:
                try:
                    self.store.delete(self.uri(render_id, suffix))
                except NotFound:
                    pass

        await asyncio.to_thread(remove)

    def _idempotency_uri(self, owner: str, key: str) -> str:
        name = hashlib.sha256(f"{owner}\n{key}".encode()).hexdigest()
        return self.root.join("idempotency", f"{name}.json").uri

    async def idempotency_bound(self, owner: str, key: str) -> tuple[str, str] | None:
        """(the render id, the request digest) `key` is bound to for `owner`; None when it is not bound."""
        try:
            bound = json.loads(await self._record_io(self.store.read, self._idempotency_uri(owner, key)))
        except NotFound:
            return None
        return bound["id"], bound["request_sha256"]

    async def claim_idempotency(self, owner: str, key: str, render_id: str, request_sha256: str) -> tuple[str, str]:
        """Bind `key` to `render_id` and its request digest unless it is bound already: (the render id, the request
        digest) it is bound to. Create-only, so two retries racing bind one render."""
        uri = self._idempotency_uri(owner, key)
        data = json.dumps({"id": render_id, "request_sha256": request_sha256}).encode()

        def claim() -> dict:
            try:
                self.store.write(uri, data, if_absent=True)
                return json.loads(data)
            except AlreadyExists:
                return json.loads(self.store.read(uri))

        bound = await self._record_io(claim)
        return bound["id"], bound["request_sha256"]
