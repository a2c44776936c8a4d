"""Asynchronous renders: each one's status (and, once done, its MP4) kept in object storage under `renders_uri`,
so any router replica can answer for any render."""

from __future__ import annotations

import asyncio

from cluster.api import RenderStatus
from storage.objectstore import NotFound, ObjectStore, parse_uri


class UnknownRender(KeyError):
    """No render of that id."""


class AsyncRenderStore:
    """`<renders_uri>/<id>.json` (a RenderStatus) and `<renders_uri>/<id>.mp4`; blocking I/O runs off the loop."""

    def __init__(self, renders_uri: str, store: ObjectStore | None = None):
        self.root = parse_uri(renders_uri)
        self.store = store or ObjectStore()

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
