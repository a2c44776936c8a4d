"""Renders expire at their `expires_at`: from that second no caller can list or read them, and the sweep removes their
record, video, thumbnail and the Idempotency-Key bound to them, leaving younger renders and keys alone."""

import asyncio
import time

from cluster.api import RenderStatus
from cluster.async_renders import AsyncRenderStore, expired, new_render_id
from cluster.videos_api import VideoObject

DAY = 86_400


def test_a_render_expires_at_its_expires_at():
    render_id = new_render_id(now=1_000_000)
    record = RenderStatus(id=render_id, status="completed", tier="edge", reason="r", created_at=1_000_000)
    assert VideoObject.of(record, retention_s=DAY).expires_at == 1_000_000 + DAY
    assert not expired(render_id, DAY, now=1_000_000 + DAY - 1)
    assert expired(render_id, DAY, now=1_000_000 + DAY)


def test_expired_renders_are_not_listed_before_the_sweep_has_run(tmp_path):
    store = AsyncRenderStore(str(tmp_path))
    old = RenderStatus(id=new_render_id(now=time.time() - 2 * DAY), owner="a", status="completed", tier="edge",
                       reason="r")
    young = old.model_copy(update={"id": new_render_id()})

    async def scenario():
        for record in (old, young):
            await store.write_status(record)
        return await store.records("a", retention_s=DAY)

    assert [r.id for r in asyncio.run(scenario())] == [young.id]


def test_the_sweep_removes_an_expired_renders_files_and_its_idempotency_key(tmp_path):
    store = AsyncRenderStore(str(tmp_path))
    old, young = new_render_id(now=time.time() - 2 * DAY), new_render_id()

    async def scenario():
        for render_id, key in ((old, "k-old"), (young, "k-young")):
            await store.write_status(RenderStatus(id=render_id, owner="a", status="completed", tier="edge", reason="r"))
            await store.write_outputs(render_id, b"mp4", b"jpg", b"sprites")
            await store.claim_idempotency("a", key, render_id, "sha")
        swept = await store.sweep(retention_s=DAY)
        return swept, await store.idempotency_bound("a", "k-old"), await store.idempotency_bound("a", "k-young")

    swept, old_key, young_key = asyncio.run(scenario())
    assert swept == 5 and old_key is None and young_key == (young, "sha")
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [name for name in left if not name.startswith("idempotency/")] == [f"{young}.{s}" for s in
                                                                               ("jpg", "json", "mp4", "sprites.jpg")]
    assert len([name for name in left if name.startswith("idempotency/")]) == 1
