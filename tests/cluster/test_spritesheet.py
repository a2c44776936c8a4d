"""The spritesheet variant without a cluster: which frames, in what grid, at what size, decoded back."""

import io

import numpy as np
from PIL import Image

from cluster.spritesheet import MAX_TILE_SIDE, sprite_layout, spritesheet


def flat_clip(frames: int, height: int, width: int) -> np.ndarray:
    """A clip whose frame i is one flat grey level, 10 * i: each tile says which frame it shows."""
    return np.broadcast_to((10 * np.arange(frames, dtype=np.uint8))[:, None, None, None],
                           (frames, height, width, 3)).copy()


def tile_levels(jpeg: bytes, columns: int, rows: int) -> tuple[tuple[int, int], list[int]]:
    """(sheet size, the mean grey level of each tile, row by row)."""
    sheet = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float64)
    h, w = sheet.shape[0] // rows, sheet.shape[1] // columns
    levels = [round(sheet[r * h:(r + 1) * h, c * w:(c + 1) * w].mean()) for r in range(rows) for c in range(columns)]
    return (sheet.shape[1], sheet.shape[0]), levels


def test_a_short_clip_shows_every_frame_at_full_size_four_to_a_row():
    layout = sprite_layout(8, 32, 48)
    assert layout.frames == tuple(range(8)) and (layout.columns, layout.rows) == (4, 2)
    assert layout.size == (4 * 48, 2 * 32)
    size, levels = tile_levels(spritesheet(flat_clip(8, 32, 48)), 4, 2)
    assert size == (192, 64)
    assert all(abs(level - 10 * i) <= 2 for i, level in enumerate(levels)), levels  # frame i in tile i, in order


def test_a_long_large_clip_shows_sixteen_evenly_spaced_frames_scaled_down():
    layout = sprite_layout(21, 480, 832)
    assert layout.frames[0] == 0 and layout.frames[-1] == 20 and len(layout.frames) == 16
    assert (layout.columns, layout.rows) == (4, 4)
    assert (layout.tile_width, layout.tile_height) == (MAX_TILE_SIDE, 148)  # 832x480 scaled to a 256-px side
    assert layout.header() == "4x4 tiles of 256x148, frames " + ",".join(map(str, layout.frames))
    size, levels = tile_levels(spritesheet(flat_clip(21, 480, 832)), 4, 4)
    assert size == (1024, 592)
    assert all(abs(level - 10 * f) <= 2 for f, level in zip(layout.frames, levels, strict=True)), levels


def test_a_grid_with_empty_slots_leaves_them_black():
    layout = sprite_layout(5, 16, 16)
    assert (layout.columns, layout.rows) == (4, 2)
    _, levels = tile_levels(spritesheet(flat_clip(5, 16, 16) + 100), 4, 2)
    assert levels[4] >= 138 and levels[5:] == [0, 0, 0]


def test_a_stored_spritesheet_goes_with_its_render_when_deleted_or_swept(tmp_path):
    import asyncio
    import time

    from cluster.api import RenderStatus
    from cluster.async_renders import AsyncRenderStore, new_render_id

    store = AsyncRenderStore(str(tmp_path))
    deleted = RenderStatus(id=new_render_id(), status="completed", tier="edge", reason="r")
    expired = deleted.model_copy(update={"id": new_render_id(now=time.time() - 3 * 86_400)})
    kept = deleted.model_copy(update={"id": new_render_id()})

    async def scenario():
        for record in (deleted, expired, kept):
            await store.write_status(record)
            await store.write_outputs(record.id, b"mp4", b"jpg", spritesheet(flat_clip(8, 16, 16)))
        await store.delete(deleted)
        await store.sweep(retention_s=86_400)
        return await store.read_video(kept.id, ".sprites.jpg")

    assert Image.open(io.BytesIO(asyncio.run(scenario()))).size == (64, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{deleted.id}.json", f"{kept.id}.json",
                                                                 f"{kept.id}.jpg", f"{kept.id}.mp4",
                                                                 f"{kept.id}.sprites.jpg"])
