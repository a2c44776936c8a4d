"""Asynchronous renders: each one's status (and, once done, its MP4) kept in object storage under `renders_uri`,
so any router replica can answer for any render.

A queued render has a lease its router renews while it renders; a router that stops (a crash, a restart, a
scale-down) renews nothing, so whoever reads a queued status whose lease has lapsed records it failed: every render
ends done or failed within one lease. Render ids begin with their creation time, so a sweep can delete renders
older than the retention period from the listing alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from cluster.api import RenderStatus
from storage.objectstore import NotFound, ObjectStore, parse_uri


class UnknownRender(KeyError):
    """No render of that id."""


LAPSED = "the router that was rendering it stopped before it finished; submit the request again"


def new_render_id(now: float | None = None) -> str:
    """32 hex digits: the creation time in seconds (10), then 22 random ones."""
    return f"{int(time.time() if now is None else now):010x}{uuid.uuid4().hex[:22]}"


def created_at(render_id: str) -> float:
    return float(int(render_id[:10], 16))


class AsyncRenderStore:
    """`<renders_uri>/<id>.json` (a RenderStatus) and `<renders_uri>/<id>.mp4`; blocking I/O runs off the loop."""

    def __init__(self, renders_uri: str, store: ObjectStore | None = None):
        self.root = parse_uri(renders_uri)
        self.store = store or ObjectStore()

    async def read_current(self, render_id: str) -> RenderStatus:
        """The status, with a queued render whose lease has lapsed recorded (and returned) as failed."""
        status = await self.read_status(render_id)
        if status.status == "queued" and status.lease_until is not None and status.lease_until < time.time():
            status = status.model_copy(update={"status": "failed", "error": LAPSED, "lease_until": None})
            await self.write_status(status)
        return status

    async def sweep(self, retention_s: float) -> int:
        """Delete every render created more than `retention_s` ago; returns how many files went."""
        def sweep() -> int:
            cutoff, prefix, deleted = time.time() - retention_s, self.root.uri.rstrip("/") + "/", 0
            for obj in self.store.list(self.root):
                name = obj.uri.removeprefix(prefix)
                render_id = name.split(".")[0]
                if len(render_id) == 32 and all(c in "0123456789abcdef" for c in render_id) \
                        and created_at(render_id) < cutoff:
                    try:
                        self.store.delete(obj.uri)
                        deleted += 1
                    except NotFound:  # another router replica swept it first
                        pass
            return deleted

        return await asyncio.to_thread(sweep)

    def uri(self, render_id: str, suffix: str) -> str:
        return self.root.join(f"{render_id}{suffix}").uri

    async def write_status(self, status: RenderStatus) -> None:
        data = status.model_dump_json(indent=2).encode()
        await asyncio.to_thread(self.store.write, self.uri(status.id, ".json"), data)

    async def write_video(self, render_id: str, mp4: bytes) -> None:
        await asyncio.to_thread(self.store.write, self.uri(render_id, ".mp4"), mp4)

    async def read_status(self, render_id: str) -> RenderStatus:
        try:
            data = await asyncio.to_thread(self.store.read, self.uri(render_id, ".json"))
        except NotFound:
            raise UnknownRender(render_id) from None
        return RenderStatus.model_validate_json(data)

    async def read_video(self, render_id: str) -> bytes:
        return await asyncio.to_thread(self.store.read, self.uri(render_id, ".mp4"))
