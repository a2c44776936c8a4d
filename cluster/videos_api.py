"""The OpenAI-style Videos API's shapes: the create request (multipart or JSON), the video object, the list and delete
answers, and the error envelope every refusal uses.

The official `openai` SDK (`client.videos`) is the reference client: it sends a create as multipart/form-data with
vidgen's own fields (`extra_body`) as more form fields and booleans as "true"/"false", reads `{"error": {"message",
"type", "param", "code"}}` into its exceptions, and polls `retrieve` while the status is `queued` or `in_progress`,
sleeping what the `openai-poll-after-ms` header says. `seconds` and `size` ("WxH") are mapped to frames, height and
width here; what a tier's model can make is judged on those (`cluster.api.check_limits`), and a refusal of them names
`seconds` or `size` again (`caller_field`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cluster.api import RenderStatus, VideoRequest
from vidgen.clip_request import Capabilities, FieldProblem

# The frame rate of every MP4 served (storage.video.encode's default): `seconds` is frames / FRAME_RATE.
FRAME_RATE = 8
POLL_AFTER_HEADER = "openai-poll-after-ms"
IDEMPOTENCY_HEADER = "Idempotency-Key"
LORA_HEADER = "X-Vidgen-Lora"  # the adapter a render was asked with, on its video object's answers
# The first poll comes when the estimate says the render is done, later ones every quarter of the estimate: each poll
# is an HTTP request through the proxy and the router, as dear as an edge clip's sampling on 2 cores (benchmarks/
# serve.py (e): polling every quarter estimate from the start halved the clips/s of the edge tier). Never more often
# than every 20 ms (an edge clip renders in tens of ms) nor rarer than every 5 s.
POLL_SHARE, MIN_POLL_MS, MAX_POLL_MS = 0.25, 20, 5000
# A poll of a render that the answering router runs is held until the render ends, for at most this long: an edge
# render then needs one poll instead of one and a half on average under 8 clients (benchmarks/serve.py (e)), and a
# progress bar still moves every second or so.
POLL_HOLD_S = 1.0

ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               429: "rate_limit_error"}


def api_error(status: int, message: str, param: str | None = None, code: str | None = None,
              headers: dict | None = None) -> JSONResponse:
    """A refusal in OpenAI's envelope, which the SDK turns into its typed exceptions (`param` and `code` set)."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class CreateVideo(VideoRequest):
    """POST /v1/videos: the OpenAI fields (`model`, `seconds`, `size`) and vidgen's own (a VideoRequest's)."""

    model: str | None = Field(None, max_length=200, description="a tier (edge, cloud) or the model reference a tier "
                                                                "serves; left out, placement picks the tier")
    seconds: str | None = Field(None, max_length=16, description="clip length in seconds; frames = seconds x "
                                                                f"{FRAME_RATE} fps, which the model must make")
    size: str | None = Field(None, max_length=16, description="WIDTHxHEIGHT in pixels, which the model must make")

    def clip_request(self) -> tuple[VideoRequest | None, list[FieldProblem]]:
        """The VideoRequest with `seconds` and `size` turned into frames, height and width; or the problems."""
        problems, update = [], {}
        if self.seconds is not None:
            frames = seconds_to_frames(self.seconds)
            if frames is None:
                problems.append(FieldProblem("seconds", f"{self.seconds!r} is not a positive number of seconds"))
            elif self.frames is not None and self.frames != frames:
                problems.append(FieldProblem("seconds", f"{self.seconds} s is {frames} frames; frames says "
                                                        f"{self.frames}: give one of them"))
            else:
                update["frames"] = frames
        if self.size is not None:
            shape = parse_size(self.size)
            if shape is None:
                problems.append(FieldProblem("size", f"{self.size!r} is not WIDTHxHEIGHT, e.g. 32x32"))
            else:
                update["width"], update["height"] = shape
        if problems:
            return None, problems
        fields = self.model_dump(exclude={"model", "seconds", "size"}, exclude_unset=True)
        return VideoRequest.model_validate({**fields, **update}), []

    def digest(self) -> str:
        """sha256 of the request as sent (unset fields left out): what an Idempotency-Key is bound to."""
        return hashlib.sha256(json.dumps(self.model_dump(exclude_unset=True), sort_keys=True).encode()).hexdigest()


def seconds_to_frames(seconds: str) -> int | None:
    try:
        value = float(seconds)
    except ValueError:
        return None
    return round(value * FRAME_RATE) if math.isfinite(value) and value > 0 else None


def parse_size(size: str) -> tuple[int, int] | None:
    """(width, height) of "WIDTHxHEIGHT"; None when it is not that."""
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or int(width) < 1 or int(height) < 1:
        return None
    return int(width), int(height)


def seconds_of(frames: int) -> str:
    """frames as the `seconds` string the video object carries: "1", "0.5"."""
    return f"{frames / FRAME_RATE:g}"


def caller_field(problem: FieldProblem, body: CreateVideo, caps: Capabilities | None) -> FieldProblem:
    """A problem with frames, height or width that came from `seconds` or `size` is told about that field, with the
    values the model makes in the caller's units."""
    if problem.field == "frames" and body.seconds is not None:
        made = f"; it makes {_seconds_rule(caps)}" if caps else ""
        return FieldProblem("seconds", f"{body.seconds} s ({problem.reason}){made}")
    if problem.field in ("height", "width") and body.size is not None:
        made = f"; it makes {caps.width.describe()} wide and {caps.height.describe()} high" if caps else ""
        return FieldProblem("size", f"{body.size}: {problem.field} {problem.reason}{made}")
    return problem


def _seconds_rule(caps: Capabilities) -> str:
    frames = caps.frames
    if frames.min == frames.max:
        return f"{seconds_of(frames.min)} s ({frames.min} frames at {FRAME_RATE} fps)"
    return f"{frames.describe()} frames at {FRAME_RATE} fps (default {seconds_of(frames.default)} s)"


class VideoError(BaseModel):
    code: str = Field(description="what failed: prompt_rejected, render_failed, replica_lost, lease_lapsed")
    message: str


class VideoObject(BaseModel):
    """A render as the SDK's `Video` reads it, with vidgen's placement as extra fields."""

    id: str
    object: Literal["video"] = "video"
    model: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(ge=0, le=100, description="sampler steps done of those asked, in percent")
    created_at: int
    completed_at: int | None = None
    expires_at: int | None = None
    prompt: str
    size: str
    seconds: str
    error: VideoError | None = None
    tier: str = Field(description="vidgen: the tier placement chose")
    placement_reason: str = Field(description="vidgen: why that tier")
    replica: str | None = Field(None, description="vidgen: the replica that rendered it, once done")
    lora: str | None = Field(None, description="vidgen: the adapter asked for (`model` names the adapter loaded, as "
                                               "BASE+ADAPTER, once done)")

    @classmethod
    def of(cls, record: RenderStatus, retention_s: float) -> VideoObject:
        return cls(id=record.id, model=record.model, status=record.status, progress=record.progress,
                   created_at=int(record.created_at),
                   completed_at=int(record.completed_at) if record.completed_at else None,
                   expires_at=int(record.created_at + retention_s), prompt=record.prompt,
                   size=f"{record.width}x{record.height}", seconds=seconds_of(record.frames),
                   error=VideoError(code=record.error_code or "render_failed", message=record.error)
                   if record.error else None,
                   tier=record.tier, placement_reason=record.reason, replica=record.replica, lora=record.lora)


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VideoObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool = True


def poll_after_ms(record: RenderStatus, now: float | None = None) -> int:
    """How long a client should wait before polling again: until the tier's estimate for the render runs out, then a
    share of the estimate."""
    elapsed_ms = 1000 * ((time.time() if now is None else now) - record.created_at)
    wait = max(record.estimate_ms - elapsed_ms, record.estimate_ms * POLL_SHARE)
    return int(min(max(wait, MIN_POLL_MS), MAX_POLL_MS))


def page(records: list[RenderStatus], after: str | None, limit: int, order: str) -> tuple[list[RenderStatus], bool]:
    """One page of `records` (oldest first) in `order`, starting after the id `after`: (the page, whether more
    follow). An `after` that names no record is a KeyError."""
    ordered = records if order == "asc" else records[::-1]
    ids = [r.id for r in ordered]
    if after is not None and after not in ids:
        raise KeyError(after)
    start = ids.index(after) + 1 if after is not None else 0
    return ordered[start:start + limit], start + limit < len(ordered)
