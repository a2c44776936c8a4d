"""The HTTP API's request and response bodies, and the per-deployment limits checked on top of them.

Pydantic's bounds are the hard ceiling every deployment shares (so the OpenAPI spec states them); `check_limits`
applies the configured, usually tighter, limits and the served model's clip shape, naming the field it refuses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cluster.placement import PlacementRequest, Quality
from cluster.serve_config import Limits

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
TIER_HEADER = "X-Vidgen-Tier"
REASON_HEADER = "X-Vidgen-Placement-Reason"
REPLICA_HEADER = "X-Vidgen-Replica"


class VideoRequest(BaseModel):
    """POST /v1/videos."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=1000, description="what the clip shows, e.g. 'a red square "
                                                                    "moving right'")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="the same prompt, seed and settings give the same clip")
    frames: int | None = Field(None, ge=1, le=1024, description="must match the served model's clip; omit it")
    height: int | None = Field(None, ge=1, le=4096)
    width: int | None = Field(None, ge=1, le=4096)
    steps: int | None = Field(None, ge=1, le=1000, description="Euler steps; omit for the tier's default")
    guidance: float | None = Field(None, ge=1.0, le=20.0)
    quality: Quality = Field("standard", description="draft and standard may run on the edge tier; high never does")
    latency_budget_ms: float | None = Field(None, gt=0, le=3_600_000)
    region: str | None = Field(None, min_length=1, max_length=64, description="the caller's jurisdiction")
    allow_spill: bool = Field(True, description="may run on the other tier when the preferred one is unavailable")
    mode: Literal["auto", "sync", "async"] = Field("auto", description="sync answers with the MP4, async with 202 "
                                                                       "and a job id; auto decides by the estimate")

    def placement_request(self, shape: tuple[int, int, int]) -> PlacementRequest:
        frames, height, width = shape
        return PlacementRequest(quality=self.quality, frames=self.frames or frames, height=self.height or height,
                                width=self.width or width, latency_budget_ms=self.latency_budget_ms,
                                region=self.region, allow_spill=self.allow_spill)


class FieldProblem(BaseModel):
    field: str
    reason: str


def check_limits(request: VideoRequest, limits: Limits, shape: tuple[int, int, int]) -> list[FieldProblem]:
    """Problems with `request` under this deployment's limits and the served clip shape (frames, height, width)."""
    problems = []
    if len(request.prompt) > limits.max_prompt_chars:
        problems.append(FieldProblem(field="prompt", reason=f"{len(request.prompt)} characters; at most "
                                                            f"{limits.max_prompt_chars}"))
    if not request.prompt.strip():
        problems.append(FieldProblem(field="prompt", reason="is blank; describe the clip"))
    if request.steps is not None and request.steps > limits.max_steps:
        problems.append(FieldProblem(field="steps", reason=f"{request.steps}; at most {limits.max_steps}"))
    for name, native in zip(("frames", "height", "width"), shape, strict=True):
        asked = getattr(request, name)
        if asked is not None and asked != native:
            problems.append(FieldProblem(field=name, reason=f"{asked}; the served models make "
                                                            f"{shape[0]}x{shape[1]}x{shape[2]} clips: omit it or "
                                                            f"set it to {native}"))
    return problems


class JobStatus(BaseModel):
    """A render's state, as GET /v1/videos/{id} answers and as it is stored beside the video."""

    id: str
    status: Literal["queued", "done", "failed"]
    tier: str
    reason: str
    replica: str | None = None
    video_url: str | None = Field(None, description="object-store URI of the MP4 once done")
    content_url: str | None = Field(None, description="path on this server that returns the MP4 once done")
    error: str | None = None


class TierInfo(BaseModel):
    tier: str
    replicas: int = Field(description="replicas reporting now")
    seconds_per_clip: float | None = Field(None, description="measured, at the tier's default steps")
    serves: dict | None = Field(None, description="model, folder, int8, steps, guidance, clip shape, device; "
                                                  "null while no replica reports")


class ModelsResponse(BaseModel):
    tiers: list[TierInfo]
