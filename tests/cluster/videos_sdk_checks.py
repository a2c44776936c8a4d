"""The Videos API as the official `openai` SDK (3.51.0, `client.videos`) calls it, against the serving tests' app.

Imported by `tests/cluster/test_serve.py`, which owns the deployment (`server`): a module of its own would deploy a
second app. Every SDK method warns that OpenAI's own hosted service is going away; the warning is not ours.
"""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving import PROMPT, TOKEN, board_reports, wait_for

sdk_warnings = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def client(base: str, token: str = TOKEN):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=token, max_retries=0, timeout=60)


@sdk_warnings
def test_sdk_create_and_poll_ends_completed_and_downloads_the_asked_size(server):
    from storage.video import decode

    base, _ = server
    video = client(base).videos.create_and_poll(prompt=PROMPT, size="32x32", seconds="1", poll_interval_ms=100,
                                                extra_body={"quality": "draft", "seed": 5})
    assert video.status == "completed" and video.progress == 100 and video.error is None
    assert video.id.startswith("video_") and video.size == "32x32" and video.seconds == "1"
    assert video.created_at <= video.completed_at < video.expires_at
    assert video.model_extra["tier"] == "edge" and "cheapest capable tier" in video.model_extra["placement_reason"]
    clip = decode(client(base).videos.download_content(video.id).read())
    assert clip.shape == (8, 32, 32, 3)
    thumbnail = client(base).videos.download_content(video.id, variant="thumbnail").read()
    assert thumbnail.startswith(b"\xff\xd8")  # a JPEG


@sdk_warnings
def test_sdk_lists_the_callers_videos_across_pages(server):
    base, _ = server
    videos = client(base).videos
    made = [videos.create(prompt=PROMPT, extra_body={"quality": "draft", "seed": 100 + i}).id for i in range(3)]
    pages, page = [], videos.list(limit=1, order="desc")
    for _ in range(3):
        pages.append([v.id for v in page.data])
        assert page.has_more
        page = page.get_next_page()
    assert pages == [[made[2]], [made[1]], [made[0]]]  # newest first, one a page, each page after the last
    everything = [v.id for v in videos.list(limit=100, order="asc").data]
    assert everything[-3:] == made and len(set(everything)) == len(everything)


@sdk_warnings
def test_sdk_errors_carry_the_param_and_the_right_exception(server):
    import openai

    base, _ = server
    with pytest.raises(openai.AuthenticationError):
        client(base, token="wrong").videos.create(prompt=PROMPT)
    with pytest.raises(openai.BadRequestError) as bad_size:
        client(base).videos.create(prompt=PROMPT, size="64x48")
    assert bad_size.value.param == "size" and "32 wide and 32 high" in bad_size.value.message
    with pytest.raises(openai.BadRequestError) as bad_length:
        client(base).videos.create(prompt=PROMPT, seconds="4")
    assert bad_length.value.param == "seconds" and "1 s (8 frames at 8 fps)" in bad_length.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        client(base).videos.create(prompt=PROMPT, extra_body={"colour": "red"})
    assert unknown.value.param == "colour"
    with pytest.raises(openai.NotFoundError):
        client(base).videos.retrieve("video_" + "0" * 42)


@sdk_warnings
def test_sdk_create_retried_with_its_idempotency_key_renders_once(server):
    import openai

    base, _ = server
    videos = client(base).videos
    key = {"Idempotency-Key": uuid.uuid4().hex}
    before = len(videos.list(limit=100).data)
    first = videos.create(prompt=PROMPT, extra_body={"quality": "draft", "seed": 41}, extra_headers=key)
    again = videos.create(prompt=PROMPT, extra_body={"quality": "draft", "seed": 41}, extra_headers=key)
    assert again.id == first.id and len(videos.list(limit=100).data) == before + 1
    with pytest.raises(openai.UnprocessableEntityError) as reused:
        videos.create(prompt=PROMPT, extra_body={"quality": "draft", "seed": 42}, extra_headers=key)
    assert reused.value.code == "idempotency_key_reused"
    assert videos.poll(first.id, poll_interval_ms=100).status == "completed"


@sdk_warnings
def test_a_poll_of_a_running_render_is_held_until_it_ends(server):
    """A retrieve of a render the router runs answers when the render ends or POLL_HOLD_S has passed, whichever is
    first: a short render is done at the first poll (on a machine that is not too slow), a long one still reports
    its progress every second or so. A second poll of a render while one is held is answered at once."""
    from cluster.videos_api import POLL_HOLD_S

    base, _ = server
    videos = client(base).videos
    short, long = {"quality": "draft", "seed": 7}, {"quality": "high", "steps": 200, "seed": 8}  # tens of ms; seconds
    for extra in (short, long):
        video = videos.create(prompt=PROMPT, extra_body=extra)
        started = time.perf_counter()
        polled = videos.retrieve(video.id)
        held_s = time.perf_counter() - started
        assert polled.status == "completed" or held_s >= 0.9 * POLL_HOLD_S, (extra, polled.status, held_s)
    assert polled.status in ("queued", "in_progress") and held_s >= 0.9 * POLL_HOLD_S  # the long one, held
    # one poll of a render is held at a time: a second one while the first waits answers at once
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(videos.retrieve, video.id)
        wait_for(lambda: first.running(), 10, "the first poll to be sent", every_s=0.01)
        time.sleep(0.2)  # it reaches the router and is held
        second = videos.retrieve(video.id)
        assert not first.done() and second.status in ("queued", "in_progress")
        assert first.result().status in ("queued", "in_progress")
    assert videos.delete(video.id).deleted


def _cloud_steps() -> int:
    """Sampler steps the cloud replica has run, once it holds nothing (its reports lag a little)."""
    wait_for(lambda: any(r.tier == "cloud" and not r.held for r in board_reports()), 60, "the cloud replica to be idle")
    time.sleep(1)  # replicas report every 0.25 s
    return next(r for r in board_reports() if r.tier == "cloud").steps_sampled


@sdk_warnings
def test_sdk_delete_stops_a_running_render_early_and_a_queued_one_never_runs(server):
    import openai

    base, cfg = server
    videos = client(base).videos
    steps = 200
    before = _cloud_steps()
    running = videos.create(prompt=PROMPT, extra_body={"quality": "high", "steps": steps, "seed": 1})
    queued = videos.create(prompt=PROMPT, extra_body={"quality": "high", "steps": steps, "seed": 2})
    wait_for(lambda: videos.retrieve(running.id).status == "in_progress", 60, "the render to start", every_s=0.02)
    assert videos.delete(queued.id).deleted and videos.delete(running.id).deleted
    with pytest.raises(openai.NotFoundError):
        videos.retrieve(running.id)
    sampled = _cloud_steps() - before
    assert 0 < sampled < steps  # the running one stopped early, the queued one never ran (each alone: 200 steps)
    assert not [p for p in Path(cfg.renders_uri).iterdir()
                if p.name.startswith((running.id, queued.id)) and p.suffix != ".json"]
