"""Asynchronous renders end done or failed within a lease, and are deleted after their retention period."""

import asyncio
import time

from cluster.api import RenderStatus
from cluster.async_renders import LAPSED, AsyncRenderStore, created_at, new_render_id


def test_a_queued_render_whose_router_stopped_ends_failed(tmp_path):
    store = AsyncRenderStore(str(tmp_path))
    alive = RenderStatus(id=new_render_id(), status="queued", tier="edge", reason="r", lease_until=time.time() + 30)
    orphan = alive.model_copy(update={"id": new_render_id(), "lease_until": time.time() - 1})  # nobody renews it

    async def scenario():
        for status in (alive, orphan):
            await store.write_status(status)
        return await store.read_current(alive.id), await store.read_current(orphan.id), await store.read_status(
            orphan.id)

    still, ended, stored = asyncio.run(scenario())
    assert still.status == "queued"
    assert ended.status == "failed" and ended.error == LAPSED and stored.status == "failed"  # recorded for all


def test_renders_past_their_retention_are_swept(tmp_path):
    store = AsyncRenderStore(str(tmp_path))
    old = new_render_id(now=time.time() - 3 * 86_400)
    new = new_render_id()
    assert len(old) == 32 and abs(created_at(new) - time.time()) < 2

    async def scenario():
        for render_id in (old, new):
            await store.write_status(RenderStatus(id=render_id, status="done", tier="edge", reason="r"))
            await store.write_video(render_id, b"mp4")
        return await store.sweep(retention_s=86_400)

    assert asyncio.run(scenario()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{new}.json", f"{new}.mp4"]
