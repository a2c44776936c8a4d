"""Asynchronous renders end completed or failed within a lease, are deleted after their retention period, keep a
tombstone when their owner deletes them, and bind an Idempotency-Key to one render."""

import asyncio
import re
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
    assert ended.error_code == "lease_lapsed" and ended.completed_at is not None


def test_renders_past_their_retention_are_swept(tmp_path):
    store = AsyncRenderStore(str(tmp_path))
    old = new_render_id(now=time.time() - 3 * 86_400)
    new = new_render_id()
    assert re.fullmatch(r"video_[0-9a-f]{42}", old) and abs(created_at(new) - time.time()) < 2

    async def scenario():
        for render_id in (old, new):
            await store.write_status(RenderStatus(id=render_id, status="completed", tier="edge", reason="r"))
            await store.write_outputs(render_id, b"mp4", b"jpg", b"sprites")
        return await store.sweep(retention_s=86_400)

    assert asyncio.run(scenario()) == 4  # the old one's record, video, thumbnail and spritesheet
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{new}.{s}" for s in ("jpg", "json", "mp4", "sprites.jpg")]


def test_render_ids_are_unguessable_and_never_repeat():
    ids = {new_render_id(now=1_700_000_000) for _ in range(1000)}
    assert len(ids) == 1000  # 128 random bits after the creation time
    assert len({i[16:] for i in ids}) == 1000 and all(len(i) == 48 for i in ids)


def test_a_deleted_render_leaves_a_tombstone_and_no_outputs(tmp_path):
    store = AsyncRenderStore(str(tmp_path))
    mine = RenderStatus(id=new_render_id(), owner="a", status="completed", tier="edge", reason="r", created_at=1)
    later = mine.model_copy(update={"id": new_render_id(), "created_at": 2})
    theirs = mine.model_copy(update={"id": new_render_id(), "owner": "b"})

    async def scenario():
        for record in (mine, later, theirs):
            await store.write_status(record)
            await store.write_outputs(record.id, b"mp4", b"jpg", b"sprites")
        await store.delete(mine)
        return await store.records("a", retention_s=86_400), await store.read_status(mine.id)

    listed, tombstone = asyncio.run(scenario())
    assert [r.id for r in listed] == [later.id]  # the deleted one and another caller's are not listed
    assert tombstone.deleted
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(mine.id)) == [f"{mine.id}.json"]


def test_an_idempotency_key_binds_one_render_per_caller(tmp_path):
    store = AsyncRenderStore(str(tmp_path))

    async def scenario():
        first = await store.claim_idempotency("a", "k1", "video_1", "sha-x")
        again = await store.claim_idempotency("a", "k1", "video_2", "sha-y")  # a retry that lost the race
        other_caller = await store.claim_idempotency("b", "k1", "video_3", "sha-x")
        return first, again, other_caller, await store.idempotency_bound("a", "k1"), await store.idempotency_bound(
            "a", "k2")

    first, again, other_caller, bound, unbound = asyncio.run(scenario())
    assert first == again == bound == ("video_1", "sha-x")
    assert other_caller == ("video_3", "sha-x") and unbound is None
