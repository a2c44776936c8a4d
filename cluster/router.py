"""The ingress deployment: the FastAPI routes, placement, and sync or asynchronous renders.

A request is checked (token, limits, what the model can make), placed by `cluster.placement.place` on the tier state
the replicas reported (`cluster.tier_report`, collected by `cluster.tier_board`), then handed as it is to that tier's
DeploymentHandle. Short renders answer with the MP4; long ones (or `mode: async`) answer 202 with a render id, and
the video and its status go to `renders_uri` (`cluster.async_renders`), where any router replica can find them.
Each tier is judged on the clip as it would render it (its own defaults for what the request leaves out): against
its work budget, and for the estimate (its replicas' measured seconds per unit of work times the clip's work). A
render whose replica dies is retried once on the same tier only when its clip is no larger than the tier's default
clip, which every replica of the tier rendered when it loaded (the sampler is deterministic, so the retry makes the
same clip); a larger one may be what took the replica down, and is answered 503 (failed, when asynchronous) instead
of taking a second replica with it. Auth is `cluster.auth`, the body limit `cluster.body_limit`, the counters
`cluster.serve_metrics`.
"""

import asyncio
import logging
import time

from fastapi import Depends, FastAPI, HTTPException, Path
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from ray import serve
from ray.exceptions import RayActorError

from cluster.api import (
    MODEL_HEADER,
    REASON_HEADER,
    RENDER_ID_PATTERN,
    REPLICA_HEADER,
    TIER_HEADER,
    ModelsResponse,
    RenderStatus,
    TierInfo,
    VideoRequest,
    check_limits,
    work_on,
)
from cluster.async_renders import AsyncRenderStore, UnknownRender, new_render_id
from cluster.auth import BearerAuth, token_digest
from cluster.body_limit import BodyLimit
from cluster.placement import Placement, TierState, place
from cluster.serve_config import ServeConfig
from cluster.serve_metrics import RouterMetrics
from cluster.tier_report import TierReport
from vidgen.clip_request import Capabilities, ClipRequest

log = logging.getLogger(__name__)

# Request bodies are small JSON objects (the prompt is at most 1000 characters); anything far larger is refused
# before it is parsed.
MAX_BODY_BYTES = 16 * 1024

api = FastAPI(title="vidgen", version="1",
              description="Text-to-video clips from a diffusion transformer, placed per request on an edge tier "
                          "(int8, fewer steps, CPU) or a cloud tier (full model). Send `Authorization: Bearer "
                          "<token>`. The chosen tier and the reason come back in the X-Vidgen-Tier and "
                          "X-Vidgen-Placement-Reason headers.")


def _router():
    """The Router instance serving this request (the middlewares are set up before it exists)."""
    return serve.get_replica_context().servable_object


# Outermost last: the token is checked before the body is read, the body is read whole before a route runs.
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, timeout_s=lambda: _router().cfg.limits.body_timeout_s)
api.add_middleware(BearerAuth, digest=lambda: _router().digest)
# Documents the scheme in the OpenAPI spec; `BearerAuth` has already checked the token when a route runs.
authorized = HTTPBearer(auto_error=False, description="the token configured for this deployment")


def _header(text: str) -> str:
    """A header value from any text: HTTP headers are Latin-1, and a reason may quote a caller's input (a region
    in any script); non-ASCII characters are escaped."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _error(status: int, detail, placement: Placement | None = None) -> JSONResponse:
    headers = {REASON_HEADER: _header(placement.reason)} if placement else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class RenderTookReplicaDown(RuntimeError):
    """The replica rendering a clip larger than its tier's default died under it; the render is not tried again."""

    def __init__(self, tier: str):
        super().__init__(f"the {tier} replica rendering this request died during the render, which may have taken it "
                         f"down: a clip larger than the {tier} tier's default is not retried; ask for fewer frames or "
                         "steps, or a smaller size")


def retries_after_replica_death(caps: Capabilities, request: ClipRequest) -> bool:
    """Whether a render whose replica died under it is tried once more: only when its clip costs no more than the
    tier's default clip, which every replica of the tier rendered at load (so it did not kill this one); a larger
    clip may have, and a retry would take a second replica down with it."""
    return work_on(caps, request) <= work_on(caps)


def tier_states(cfg: ServeConfig, reports: list[TierReport], outstanding: dict[str, int],
                request: ClipRequest | None = None) -> list[TierState]:
    """Each tier as placement judges it, from its replicas' fresh reports: the estimate is their mean measured
    seconds per unit of work times the work of the clip `request` asks of that tier, at that tier's own defaults for
    what the request leaves out (its default clip with no request)."""
    states = []
    for name, tier in cfg.tiers.items():
        mine = [r for r in reports if r.tier == name]
        caps = mine[0].capabilities if mine else None  # one tier's replicas load the same model
        seconds_per_work = sum(r.seconds_per_work for r in mine) / len(mine) if mine else float("inf")
        work = work_on(caps, request) if caps is not None else 1
        states.append(TierState(name=name, healthy=bool(mine), replicas=len(mine),
                                queue_depth=max(sum(r.held for r in mine), outstanding[name]),
                                seconds_per_clip=seconds_per_work * work, cost_per_clip=tier.cost_per_clip,
                                regions=tier.regions, default_shape=caps.shape if caps is not None else None))
    return states


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
@serve.ingress(api)
class Router:
    async def __init__(self, config: dict, edge, cloud, board, insecure_local: bool = False):
        import os

        self.cfg = ServeConfig.model_validate(config)
        self.digest = token_digest(self.cfg.auth, dict(os.environ), insecure_local)
        self.handles = {"edge": edge, "cloud": cloud}
        self.board = board
        self.renders = AsyncRenderStore(self.cfg.renders_uri)
        self.outstanding = {"edge": 0, "cloud": 0}
        self.reports: list[TierReport] = []
        self.background: set[asyncio.Task] = set()
        self.metrics = RouterMetrics()
        self._spawn(self._refresh_forever())
        self._spawn(self._sweep_forever())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _sweep_forever(self) -> None:
        """Delete asynchronous renders past their retention (every replica sweeps; deleting twice is harmless)."""
        while True:
            try:
                await self.renders.sweep(self.cfg.renders_retention_s)
            except Exception as exc:  # the store being away must not take the router down; the next sweep heals
                log.warning("sweeping old renders failed: %s", exc)
            await asyncio.sleep(min(self.cfg.renders_retention_s / 10, 600))

    async def _renew_lease(self, status: RenderStatus, writing: asyncio.Lock, finished: asyncio.Event) -> None:
        """While this router renders `status`, keep its lease ahead of the clock. Writes hold `writing`, so the
        final status, written under it after `finished` is set, is never overwritten by a late renewal."""
        while not finished.is_set():
            try:
                await asyncio.wait_for(finished.wait(), self.cfg.async_lease_s / 3)
                return
            except TimeoutError:
                pass
            async with writing:
                if not finished.is_set():
                    try:
                        if (await self.renders.read_status(status.id)).status != "queued":
                            return  # a reader found the lease lapsed (this router was too slow to renew)
                        await self.renders.write_status(status.model_copy(
                            update={"lease_until": time.time() + self.cfg.async_lease_s}))
                    except Exception as exc:  # the next renewal may get through before the lease lapses
                        log.warning("could not renew the lease of asynchronous render %s: %s", status.id, exc)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                self.reports = await self.board.snapshot.remote()
            except Exception as exc:
                log.warning("tier board unreachable: %s", exc)
            await asyncio.sleep(self.cfg.report_every_s)

    def _reports_of(self, tier: str) -> list[TierReport]:
        """The fresh reports of one tier's replicas; they load the same model, so the first says what it makes."""
        return [r for r in self.reports if r.tier == tier]

    async def _render(self, tier: str, request: VideoRequest, retry: bool) -> dict:
        """The tier's answer to `request`; a replica dying under it is RenderTookReplicaDown unless `retry`
        (`retries_after_replica_death`), when the render is tried once more."""
        self.outstanding[tier] += 1
        try:
            try:
                return await self.handles[tier].render.remote(request)
            except RayActorError as exc:
                if not retry:
                    log.warning("%s replica died rendering a clip larger than the tier's default (%s); not retried",
                                tier, exc)
                    raise RenderTookReplicaDown(tier) from exc
                log.warning("%s replica died during a render (%s); retrying once", tier, exc)
                return await self.handles[tier].render.remote(request)
        finally:
            self.outstanding[tier] -= 1

    def _tier_capabilities(self) -> dict[str, Capabilities]:
        """What each tier's replicas report their model makes (tiers with no replica reporting are left out)."""
        return {name: reports[0].capabilities for name in self.cfg.tiers if (reports := self._reports_of(name))}

    async def _run_async(self, status: RenderStatus, request: VideoRequest, retry: bool) -> None:
        started = time.perf_counter()
        writing, finished = asyncio.Lock(), asyncio.Event()
        renewing = asyncio.get_running_loop().create_task(self._renew_lease(status, writing, finished))
        try:
            result = await self._render(status.tier, request, retry)
            if "rejected" in result:
                done = status.model_copy(update={"status": "failed", "error": f"prompt: {result['rejected']}"})
            else:
                await self.renders.write_video(status.id, result["mp4"])
                done = status.model_copy(update={"status": "done", "replica": result["replica"],
                                                 "content_url": f"/v1/videos/{status.id}/content"})
        except RenderTookReplicaDown as exc:
            done = status.model_copy(update={"status": "failed", "error": str(exc)})
        except Exception:  # the details (paths, hosts, library internals) go to the log, not to the caller
            log.exception("asynchronous render %s failed", status.id)
            done = status.model_copy(update={"status": "failed",
                                             "error": f"the render failed on the {status.tier} tier; retry, or ask "
                                                      f"the operator about render {status.id}"})
        done = done.model_copy(update={"lease_until": None})
        self.metrics.finished(status.tier, done.status, time.perf_counter() - started)
        async with writing:
            finished.set()
            try:
                await self.renders.write_status(done)
            except Exception:  # the status stays `queued` until its lease lapses; the log says why
                log.exception("could not record the end of asynchronous render %s", status.id)
        await renewing

    @api.get("/healthz", summary="Liveness, and how many replicas each tier has reporting")
    async def healthz(self) -> dict:
        replicas = {name: len(self._reports_of(name)) for name in self.cfg.tiers}
        return {"status": "ok" if all(replicas.values()) else "degraded", "replicas": replicas}

    @api.get("/v1/models", response_model=ModelsResponse, summary="What each tier serves",
             dependencies=[Depends(authorized)])
    async def models(self) -> ModelsResponse:
        tiers = []
        for state in tier_states(self.cfg, self.reports, self.outstanding):
            reports = self._reports_of(state.name)
            shares = [r.prompt_ood_share for r in reports if r.prompt_ood_share is not None]
            tiers.append(TierInfo(tier=state.name, replicas=state.replicas,
                                  serves=reports[0].serves if reports else None,
                                  capabilities=reports[0].capabilities if reports else None,
                                  prompt_ood_share=sum(shares) / len(shares) if shares else None,
                                  seconds_per_clip=state.seconds_per_clip if state.healthy else None))
        return ModelsResponse(tiers=tiers)

    @api.post("/v1/videos", summary="Render a clip: the MP4 (200) or a render to poll (202)",
              responses={200: {"content": {"video/mp4": {}}, "description": "the clip"},
                         202: {"model": RenderStatus, "description": "accepted; poll GET /v1/videos/{id}"},
                         401: {"description": "missing or wrong token"},
                         413: {"description": "request body too large"},
                         422: {"description": "a field is invalid, over this deployment's limits, or not one the "
                                              "model can make"},
                         451: {"description": "no tier may serve the caller's region"},
                         503: {"description": "no tier can take the request now (reason given)"}},
              dependencies=[Depends(authorized)])
    async def create_video(self, body: VideoRequest):
        started = time.perf_counter()
        caps = self._tier_capabilities()
        if not caps:
            self.metrics.refused(503)
            return _error(503, "no replica of either tier is reporting yet; retry shortly")
        problems = check_limits(body, self.cfg.limits)
        if problems:
            return _error(422, [{"loc": ["body", p.field], "msg": p.reason} for p in problems])
        cannot = {tier: check_limits(body, self.cfg.limits, c, self.cfg.tiers[tier].work_budget)
                  for tier, c in caps.items()}
        capable = [tier for tier in caps if not cannot[tier]]
        if not capable:
            if len(caps) < len(self.cfg.tiers):
                self.metrics.refused(503)
                return _error(503, "no reporting tier's model can make this request and "
                                   f"{', '.join(t for t in self.cfg.tiers if t not in caps)} is not reporting yet; "
                                   "retry shortly")
            return _error(422, [{"loc": ["body", p.field], "msg": f"{tier}: {p.reason}"}
                                for tier, found in cannot.items() for p in found])
        states = [s.model_copy(update={"cannot": "; ".join(f"{p.field}: {p.reason}" for p in cannot[s.name])
                                       if cannot.get(s.name) else None})
                  for s in tier_states(self.cfg, self.reports, self.outstanding, body)]
        placement = place(body.placement_request(), states, self.cfg.policy)
        if placement.tier is None:
            self.metrics.refused(placement.status)
            return _error(placement.status, placement.reason, placement)
        self.metrics.placed(placement.tier, spilled=placement.reason.startswith("spilled"))
        headers = {TIER_HEADER: placement.tier, REASON_HEADER: _header(placement.reason)}
        estimate_ms = next(t for t in states if t.name == placement.tier).estimated_ms()
        retry = retries_after_replica_death(caps[placement.tier], body)
        if body.mode == "async" or (body.mode == "auto" and estimate_ms > self.cfg.sync_max_ms):
            status = RenderStatus(id=new_render_id(), status="queued", tier=placement.tier, reason=placement.reason,
                                  lease_until=time.time() + self.cfg.async_lease_s)
            await self.renders.write_status(status)
            self._spawn(self._run_async(status, body, retry))
            return JSONResponse(status.model_dump(), status_code=202,
                                headers={**headers, "Location": f"/v1/videos/{status.id}"})
        try:
            result = await self._render(placement.tier, body, retry)
        except RenderTookReplicaDown as exc:
            self.metrics.finished(placement.tier, "failed")
            return _error(503, str(exc), placement)
        except RayActorError as exc:  # its replicas died twice in a row: the tier is not there now
            self.metrics.finished(placement.tier, "failed")
            return _error(503, f"{placement.tier} replicas died during the render ({type(exc).__name__}); retry",
                          placement)
        except Exception:
            self.metrics.finished(placement.tier, "failed")
            raise
        if "rejected" in result:
            self.metrics.finished(placement.tier, "rejected")
            return _error(422, [{"loc": ["body", "prompt"], "msg": result["rejected"]}], placement)
        self.metrics.finished(placement.tier, "done", time.perf_counter() - started)
        return Response(result["mp4"], media_type="video/mp4",
                        headers={**headers, REPLICA_HEADER: result["replica"], MODEL_HEADER: _header(result["model"])})

    async def _status(self, render_id: str) -> RenderStatus:
        try:
            return await self.renders.read_current(render_id)
        except UnknownRender:
            raise HTTPException(404, f"no render {render_id}") from None

    @api.get("/v1/videos/{render_id}", response_model=RenderStatus,
             summary="An asynchronous render's status and, once done, its URLs",
             responses={404: {"description": "no such render"}}, dependencies=[Depends(authorized)])
    async def video_status(self, render_id: str = Path(pattern=RENDER_ID_PATTERN)) -> RenderStatus:
        return await self._status(render_id)

    @api.get("/v1/videos/{render_id}/content", summary="The finished MP4",
             responses={200: {"content": {"video/mp4": {}}}, 404: {"description": "no such render"},
                        409: {"description": "not finished"}}, dependencies=[Depends(authorized)])
    async def video_content(self, render_id: str = Path(pattern=RENDER_ID_PATTERN)) -> Response:
        status = await self._status(render_id)
        if status.status != "done":
            raise HTTPException(409, f"render {render_id} is {status.status}")
        return Response(await self.renders.read_video(render_id), media_type="video/mp4",
                        headers={TIER_HEADER: status.tier})
