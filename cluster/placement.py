"""Where a video request runs: the edge tier (distilled, int8, CPU) or the cloud tier (full model, GPU).

A pure function, so it is tested without a cluster. The rules apply in order:
  1. jurisdiction  a tier may only serve the regions it is allowed in (451 when none may)
  2. capability    a tier's model must make the clip asked (its declared frames and sizes) within the tier's work
                   budget (the router says why not), and the edge tier renders only up to a quality, frame count
                   and pixel count (422 when no tier can); a size the request leaves out is the default of the
                   tier being judged
  3. health        an unhealthy, empty or overloaded tier is skipped; the request's preferred (cheapest capable)
                   tier spills to the other only when the request allows it (503 otherwise)
  4. latency       the queue-adjusted estimate must fit the request's budget (503 naming the estimates otherwise;
                   422 when even an idle tier is too slow: waiting would not help)
  5. cost          the cheapest tier left wins; equal costs go to the faster one
Thresholds are `PolicyConfig`, not constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Quality = Literal["draft", "standard", "high"]
QUALITY_ORDER = {"draft": 0, "standard": 1, "high": 2}


class PolicyConfig(BaseModel):
    """What the edge model can render and when a tier counts as overloaded."""

    model_config = ConfigDict(extra="forbid")

    edge_max_quality: Quality = Field("standard", description="highest quality the edge model is trusted with")
    edge_max_frames: int = Field(16, ge=1)
    edge_max_pixels: int = Field(64 * 64, ge=1, description="height x width the edge model can make")
    overload_queue_per_replica: float = Field(8.0, gt=0, description="queued requests per replica above which "
                                                                     "a tier takes no more")


class TierState(BaseModel):
    """A tier as its replicas report it."""

    name: Literal["edge", "cloud"]
    healthy: bool = True
    replicas: int = Field(1, ge=0)
    queue_depth: int = Field(0, ge=0, description="requests waiting or running across the tier's replicas")
    seconds_per_clip: float = Field(gt=0, description="time of the request's clip on one replica: the replicas' "
                                                      "measured seconds per unit of work times the clip's work")
    cost_per_clip: float = Field(ge=0)
    regions: list[str] = Field(default_factory=list, description="regions it may serve; empty means any")
    cannot: str | None = Field(None, description="why the tier's model cannot make this request, if it cannot")
    default_shape: tuple[int, int, int] | None = Field(None, description="(frames, height, width) its model makes "
                                                                         "when a request names none; None while "
                                                                         "none of its replicas reports")

    def estimated_ms(self) -> float:
        """Time to a finished clip if sent now: its own clip plus its share of the queue ahead of it."""
        return 1000 * self.seconds_per_clip * (1 + self.queue_depth / max(self.replicas, 1))


class PlacementRequest(BaseModel):
    """What the caller asks for; a size left out (None) is each tier's own default."""

    quality: Quality = "standard"
    frames: int | None = Field(None, ge=1)
    height: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=1)
    latency_budget_ms: float | None = Field(None, gt=0)
    region: str | None = None
    allow_spill: bool = True


@dataclass(frozen=True)
class Placement:
    """The chosen tier (None when refused), why, and the HTTP status to answer with."""

    tier: str | None
    reason: str
    status: int = 200


def _clip_on(tier: TierState, request: PlacementRequest) -> tuple[int | None, int | None, int | None]:
    """(frames, height, width) of the clip `request` asks of `tier`: the sizes it names, the tier's default for the
    others (None where the tier reports no default: nothing to judge)."""
    defaults = tier.default_shape or (None, None, None)
    named = (request.frames, request.height, request.width)
    return tuple(size if size is not None else default for size, default in zip(named, defaults, strict=True))


def _asked(named: bool, size: str) -> str:
    return f"asked {size}" if named else f"{size} by its model's default"


def _can_render(tier: TierState, request: PlacementRequest, cfg: PolicyConfig) -> str | None:
    """None if the tier's model can make the request, else why not."""
    if tier.cannot:
        return f"{tier.name}: {tier.cannot}"
    if tier.name == "cloud":
        return None
    if QUALITY_ORDER[request.quality] > QUALITY_ORDER[cfg.edge_max_quality]:
        return f"edge renders quality up to {cfg.edge_max_quality}, asked {request.quality}"
    frames, height, width = _clip_on(tier, request)
    if frames is not None and frames > cfg.edge_max_frames:
        return f"edge renders up to {cfg.edge_max_frames} frames, {_asked(request.frames is not None, str(frames))}"
    if height is not None and width is not None and height * width > cfg.edge_max_pixels:
        named = request.height is not None and request.width is not None
        return f"edge renders up to {cfg.edge_max_pixels} pixels a frame, {_asked(named, f'{height}x{width}')}"
    return None


def _unusable(tier: TierState, cfg: PolicyConfig) -> str | None:
    if not tier.healthy:
        return f"{tier.name} is unhealthy"
    if tier.replicas == 0:
        return f"{tier.name} has no replicas"
    if tier.queue_depth / tier.replicas > cfg.overload_queue_per_replica:
        return f"{tier.name} is overloaded ({tier.queue_depth} queued on {tier.replicas} replicas)"
    return None


def place(request: PlacementRequest, tiers: list[TierState], cfg: PolicyConfig | None = None) -> Placement:
    """Choose a tier for `request`, or refuse with the reason and status code."""
    cfg = cfg or PolicyConfig()
    allowed = [t for t in tiers if request.region is None or not t.regions or request.region in t.regions]
    if not allowed:
        return Placement(None, f"no tier may serve region {request.region!r}", 451)
    capable = [t for t in allowed if _can_render(t, request, cfg) is None]
    if not capable:
        why = "; ".join(_can_render(t, request, cfg) for t in allowed)
        return Placement(None, f"no tier can render this request: {why}", 422)
    ranked = sorted(capable, key=lambda t: (t.cost_per_clip, t.estimated_ms()))
    preferred = ranked[0]
    problems = {t.name: _unusable(t, cfg) for t in ranked}
    usable = [t for t in ranked if problems[t.name] is None]
    if problems[preferred.name] and not request.allow_spill:
        return Placement(None, f"{problems[preferred.name]} and the request does not allow spilling", 503)
    if not usable:
        return Placement(None, "; ".join(p for p in problems.values() if p), 503)
    budget = request.latency_budget_ms
    in_time = [t for t in usable if budget is None or t.estimated_ms() <= budget]
    if not in_time:
        # Only when every capable tier is up and measured is "too slow even idle" a fact about the request.
        if len(usable) == len(capable) and all(1000 * t.seconds_per_clip > budget for t in usable):
            fastest = min(1000 * t.seconds_per_clip for t in usable)
            return Placement(None, f"latency_budget_ms {budget:.0f} is below the fastest tier's {fastest:.0f} ms a "
                                   "clip even with nothing queued; allow more time", 422)
        estimates = ", ".join(f"{t.name} ~{t.estimated_ms():.0f} ms" for t in usable)
        return Placement(None, f"no tier meets the {budget:.0f} ms budget now: {estimates}", 503)
    chosen = in_time[0]
    if chosen is preferred:
        incapable = "; ".join(why for t in allowed if (why := _can_render(t, request, cfg)))
        skipped = f"; skipped {incapable}" if incapable else ""
        return Placement(chosen.name, f"cheapest capable tier (cost {chosen.cost_per_clip:g}, "
                                      f"~{chosen.estimated_ms():.0f} ms){skipped}")
    why = problems[preferred.name] or f"{preferred.name} ~{preferred.estimated_ms():.0f} ms exceeds the " \
                                      f"{budget:.0f} ms budget"
    return Placement(chosen.name, f"spilled from {preferred.name}: {why}")
