"""The HTTP API's request and response bodies, and the per-deployment limits checked on top of them.

Pydantic's bounds are the hard ceiling every deployment shares (so the OpenAPI spec states them); `check_limits`
applies the configured, usually tighter, limits, the served model's clip shape and the tier's work budget (on the
clip as that tier would render it), naming the field it refuses.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cluster.placement import PlacementRequest, Quality
from cluster.serve_config import Limits, WorkBudget, clip_work
from cluster.tier_report import ServedModel
from vidgen.clip_request import Capabilities, ClipRequest, FieldProblem, limit_problems, resolve_clip

RENDER_ID_PATTERN = r"^video_[0-9a-f]{42}$"  # cluster.async_renders.new_render_id
TIER_HEADER = "X-Vidgen-Tier"
REASON_HEADER = "X-Vidgen-Placement-Reason"
REPLICA_HEADER = "X-Vidgen-Replica"
MODEL_HEADER = "X-Vidgen-Model"  # NAME@vN#digest of the model that rendered the clip (an alias resolved)


class VideoRequest(ClipRequest):
    """POST /v1/videos: a clip request (`vidgen.clip_request`) and how to place it."""

    quality: Quality = Field("standard", description="draft and standard may run on the edge tier; high never does")
    latency_budget_ms: float | None = Field(None, gt=0, le=3_600_000)
    region: str | None = Field(None, min_length=1, max_length=64, description="the caller's jurisdiction")
    allow_spill: bool = Field(True, description="may run on the other tier when the preferred one is unavailable")
    lora: str | None = Field(None, min_length=1, max_length=200, description="a LoRA adapter the tier serves (a name "
                                                                            "or reference of its `loras`), applied "
                                                                            "to this render alone")

    def placement_request(self) -> PlacementRequest:
        """What the placement policy judges; sizes left out stay out (each tier is judged at its own default)."""
        return PlacementRequest(quality=self.quality, frames=self.frames, height=self.height, width=self.width,
                                latency_budget_ms=self.latency_budget_ms, region=self.region,
                                allow_spill=self.allow_spill)


def check_limits(request: VideoRequest, limits: Limits, caps: Capabilities | None = None,
                 budget: WorkBudget | None = None) -> list[FieldProblem]:
    """Problems with `request` under this deployment's limits and, given `caps`, what that model can make; given a
    tier's `budget` too, what the clip as that tier would render it (its defaults filling what the request leaves
    out) may cost."""
    problems = limit_problems(request.prompt, request.steps, limits.max_steps, limits.max_prompt_chars)
    if caps is None:
        return problems
    clip, cannot = resolve_clip(request, caps)
    if clip is None or budget is None:
        return problems + cannot
    named = {field for field in ("frames", "height", "width", "steps") if getattr(request, field) is not None}
    return problems + budget.problems(clip.frames, clip.height, clip.width, clip.steps, named)


def work_on(caps: Capabilities, request: ClipRequest | None = None) -> int:
    """frames x height x width x steps of the clip `request` asks of a model with `caps`, at its defaults for what
    the request leaves out; with no request, or one the model cannot make, its default clip's."""
    clip = resolve_clip(request, caps)[0] if request is not None else None
    if clip is None:
        return clip_work(*caps.shape, caps.steps)
    return clip_work(clip.frames, clip.height, clip.width, clip.steps)


class RenderStatus(BaseModel):
    """An asynchronous render as it is stored beside its video (`cluster.async_renders`); GET /v1/videos/{id}
    answers it as a `cluster.videos_api.VideoObject`."""

    id: str
    owner: str = Field("default", description="the caller (API key) that created it; only it sees the render")
    status: Literal["queued", "in_progress", "completed", "failed"]
    tier: str
    reason: str
    model: str = Field("", description="the model that renders it: the tier's reference until a replica names the "
                                       "version it loaded")
    prompt: str = ""
    frames: int = Field(0, description="the clip as the tier renders it (its defaults filling what the request "
                                       "left out)")
    height: int = 0
    width: int = 0
    steps: int = 0
    progress: int = Field(0, ge=0, le=100, description="sampler steps done of those asked, in percent")
    created_at: float = 0.0
    completed_at: float | None = None
    estimate_ms: float = Field(0.0, description="placement's estimate of the render, when it was created")
    replica: str | None = None
    error: str | None = None
    error_code: str | None = None
    lora: str | None = Field(None, description="the adapter the request asked for, as it named it")
    request_sha256: str | None = Field(None, description="of the create request, for its Idempotency-Key")
    deleted: bool = Field(False, description="deleted by its owner: answered 404, its video gone, swept later")
    lease_until: float | None = Field(None, description="while queued or in progress: the router rendering it "
                                                        "renews this (Unix time); a lapsed lease means that router "
                                                        "stopped, and the render ends failed")

    @property
    def active(self) -> bool:
        return self.status in ("queued", "in_progress")


class TierInfo(BaseModel):
    tier: str
    replicas: int = Field(description="replicas reporting now")
    seconds_per_clip: float | None = Field(None, description="measured, for the tier's default clip")
    serves: ServedModel | None = Field(None, description="the model: its reference, label, folder, backend and "
                                                         "pipeline class, int8, max_batch_size; null while no "
                                                         "replica reports")
    prompt_ood_share: float | None = Field(None, description="share of the tier's recent prompts out of its model's "
                                                             "training distribution (vidgen.drift); null when not "
                                                             "monitored")
    capabilities: Capabilities | None = Field(None, description="what the tier's model makes: frames, height and "
                                                                "width (default, min, max, multiple, remainder), "
                                                                "default steps and guidance, negative prompts, "
                                                                "dtype, device; null while no replica reports")


class ModelEntry(TierInfo):
    """A tier as an entry of OpenAI's model list; `id` (the tier's name) is what a create's `model` may name."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="when the router started (Unix time)")
    owned_by: str = "vidgen"


class ModelsResponse(BaseModel):
    """GET /v1/models, in OpenAI's list shape."""

    object: Literal["list"] = "list"
    data: list[ModelEntry]
