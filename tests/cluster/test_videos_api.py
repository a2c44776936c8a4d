"""The Videos API's shapes without a cluster: seconds and size mapped to frames and pixels, refusals told in the
caller's fields, paging, the video object and the error envelope as the openai SDK reads them."""

import json

import pytest

from cluster.api import RenderStatus
from cluster.videos_api import (
    CreateVideo,
    VideoObject,
    api_error,
    caller_field,
    page,
    parse_size,
    poll_after_ms,
    seconds_to_frames,
)
from vidgen.clip_request import Capabilities, Dimension, FieldProblem, resolve_clip

CAPS = Capabilities(frames=8, height=32, width=32, steps=4, guidance=3.0)
WAN = Capabilities(frames=Dimension(default=9, min=1, max=81, multiple=4, remainder=1),
                   height=Dimension(default=32, min=16, max=256, multiple=16),
                   width=Dimension(default=32, min=16, max=256, multiple=16), steps=2, guidance=5.0)


def test_seconds_and_size_become_frames_height_and_width():
    request, problems = CreateVideo(prompt="p", seconds="1", size="48x32", seed=3).clip_request()
    assert not problems
    assert (request.frames, request.width, request.height, request.seed) == (8, 48, 32, 3)
    assert CreateVideo(prompt="p").clip_request()[0].frames is None  # left out: the tier's default
    assert seconds_to_frames("0.5") == 4 and seconds_to_frames("nan") is None and seconds_to_frames("-1") is None
    assert parse_size("32X32") == (32, 32) and parse_size("32") is None and parse_size("0x32") is None


@pytest.mark.parametrize(("fields", "param"), [({"seconds": "soon"}, "seconds"), ({"size": "big"}, "size"),
                                               ({"seconds": "1", "frames": 9}, "seconds")])
def test_a_malformed_seconds_or_size_is_refused_naming_it(fields, param):
    request, problems = CreateVideo(prompt="p", **fields).clip_request()
    assert request is None and problems[0].field == param


def test_a_size_or_length_the_model_cannot_make_names_the_callers_field_and_what_it_makes():
    body = CreateVideo(prompt="p", size="64x64", seconds="2")
    request, _ = body.clip_request()
    _, problems = resolve_clip(request, CAPS)
    told = {p.field: p.reason for p in (caller_field(p, body, CAPS) for p in problems)}
    assert set(told) == {"seconds", "size"}
    assert "1 s (8 frames at 8 fps)" in told["seconds"] and "32 wide and 32 high" in told["size"]
    wan = caller_field(FieldProblem("frames", "10 cannot be made"), CreateVideo(prompt="p", seconds="1.25"), WAN)
    assert wan.field == "seconds" and "4k+1 from 1 to 81 frames at 8 fps" in wan.reason


def test_the_video_object_has_the_sdks_fields_and_vidgens_placement():
    record = RenderStatus(id="video_" + "0" * 42, status="in_progress", tier="edge", reason="cheapest capable tier",
                          model="shapes-tiny", prompt="p", frames=8, height=32, width=48, steps=4, progress=50,
                          created_at=100.5, estimate_ms=1000, error="boom", error_code="render_failed")
    video = VideoObject.of(record, retention_s=3600).model_dump(mode="json")
    assert video["object"] == "video" and video["size"] == "48x32" and video["seconds"] == "1"
    assert video["created_at"] == 100 and video["expires_at"] == 3700 and video["progress"] == 50
    assert video["error"] == {"code": "render_failed", "message": "boom"}
    assert video["tier"] == "edge" and video["placement_reason"] == "cheapest capable tier"
    assert poll_after_ms(record, now=100.5) == 1000  # first: when the estimate says it is done
    assert poll_after_ms(record, now=101.5) == 250  # late: every quarter of the estimate
    assert poll_after_ms(record.model_copy(update={"estimate_ms": 0}), now=100.5) == 20


def test_pages_follow_each_other_in_either_order():
    records = [RenderStatus(id=f"video_{i}", status="completed", tier="edge", reason="r") for i in range(5)]
    first, more = page(records, None, 2, "desc")
    assert [r.id for r in first] == ["video_4", "video_3"] and more
    last, more = page(records, "video_1", 2, "desc")
    assert [r.id for r in last] == ["video_0"] and not more
    assert [r.id for r in page(records, "video_2", 10, "asc")[0]] == ["video_3", "video_4"]
    with pytest.raises(KeyError):
        page(records, "video_9", 2, "asc")


def test_errors_are_in_openais_envelope():
    response = api_error(400, "size: 64x64 cannot be made", param="size", code="invalid_value")
    assert response.status_code == 400
    assert json.loads(response.body) == {"error": {"message": "size: 64x64 cannot be made",
                                                   "type": "invalid_request_error", "param": "size",
                                                   "code": "invalid_value"}}
    assert json.loads(api_error(401, "no").body)["error"]["type"] == "authentication_error"
