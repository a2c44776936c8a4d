"""The ingress deployment: the OpenAI-style Videos API (`cluster.videos_api`), placement, and the renders.

A request is checked (token, limits, what the model can make), placed by `cluster.placement.place` on the tier state
the replicas reported (`cluster.tier_report`, collected by `cluster.tier_board`), then handed to that tier's
DeploymentHandle. `POST /v1/videos` is always asynchronous: it answers the video object at once (nothing renders
before the answer) and the render streams its sampler steps back (`TierReplica.render_stream`) into the record's
progress; the record and, once completed, the MP4, a thumbnail and a spritesheet (`cluster.spritesheet`) go to
`renders_uri` (`cluster.async_renders`), where any router replica can find them. `DELETE /v1/videos/{id}` cancels the
render's call: a queued one never runs, a running one stops at its next sampler step (`cluster.render_jobs`); a
router rendering a render deleted through another router sees the tombstone when it renews the lease, and cancels it
too. `POST /v1/videos/sync` answers with
the MP4 (vllm-omni's route). Each tier is judged on the clip as it would render it (its own defaults for what the
request leaves out): against its work budget, and for the estimate (its replicas' measured seconds per unit of work
times the clip's work). A render whose replica dies is retried once on the same tier only when its clip is no larger
than the tier's default clip, which every replica of the tier rendered when it loaded (the sampler is deterministic,
so the retry makes the same clip); a larger one may be what took the replica down, and is answered 503 (failed, when
asynchronous) instead of taking a second replica with it. Every refusal is in OpenAI's error envelope. Auth is
`cluster.auth` (the callers, each seeing only its own renders, and their create-rate and renders-at-once limits,
answered 429 with when to retry: `cluster.callers`), the body limit `cluster.body_limit`, the counters
`cluster.serve_metrics`. A render is gone for everyone from its `expires_at` and swept from storage after. A create's
`lora` is judged per tier before placement (`cluster.tier_adapters`) and rendered by the replica with that adapter.
`GET /` is the playground page for people (`cluster.playground`), the one route besides /healthz and the API docs
served without a key.
"""

import asyncio
import logging
import time
from typing import Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError

from cluster.api import (
    MODEL_HEADER,
    REASON_HEADER,
    RENDER_ID_PATTERN,
    REPLICA_HEADER,
    TIER_HEADER,
    ModelEntry,
    ModelsResponse,
    RenderStatus,
    VideoRequest,
    check_limits,
    work_on,
)
from cluster.async_renders import SPRITESHEET, AsyncRenderStore, UnknownRender, expired, new_render_id
from cluster.auth import BearerAuth, caller_of, callers_for
from cluster.body_limit import BodyLimit
from cluster.callers import CallerAdmission, CallerLimits, retry_headers
from cluster.placement import Placement, TierState, place
from cluster.playground import playground_page
from cluster.serve_config import ServeConfig
from cluster.serve_metrics import RouterMetrics
from cluster.spritesheet import sprite_layout
from cluster.tier_adapters import AdapterCatalog
from cluster.tier_report import TierReport
from cluster.videos_api import (
    IDEMPOTENCY_HEADER,
    LORA_HEADER,
    POLL_AFTER_HEADER,
    POLL_HOLD_S,
    CreateVideo,
    VideoDeleted,
    VideoList,
    VideoObject,
    api_error,
    caller_field,
    page,
    poll_after_ms,
)
from storage.objectstore import NotFound
from vidgen.clip_request import Capabilities, ClipRequest, FieldProblem, resolve_clip

log = logging.getLogger(__name__)

# Request bodies are small (the prompt is at most 1000 characters; a multipart create adds a few hundred bytes of
# boundaries); anything far larger is refused before it is parsed.
MAX_BODY_BYTES = 16 * 1024
SPRITESHEET_HEADER = "X-Vidgen-Spritesheet"  # the sheet's grid: "4x2 tiles of 32x32, frames 0,1,...,7"

api = FastAPI(title="vidgen", version="1",
              description="Text-to-video clips from a diffusion transformer, placed per request on an edge tier "
                          "(int8, fewer steps, CPU) or a cloud tier (full model), behind OpenAI's Videos API (the "
                          "official `openai` SDK's `client.videos` works unchanged). Send `Authorization: Bearer "
                          "<token>`. The chosen tier and the reason come back in the video object (`tier`, "
                          "`placement_reason`) and in the X-Vidgen-Tier and X-Vidgen-Placement-Reason headers.")


def _router():
    """The Router instance serving this request (the middlewares are set up before it exists)."""
    return serve.get_replica_context().servable_object


# Outermost last: the token is checked before the body is read, the body is read whole before a route runs.
api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES, timeout_s=lambda: _router().cfg.limits.body_timeout_s)
api.add_middleware(BearerAuth, callers=lambda: _router().callers)
# Documents the scheme in the OpenAPI spec; `BearerAuth` has already checked the token when a route runs.
authorized = HTTPBearer(auto_error=False, description="the token configured for this deployment")


class Refused(Exception):
    """A request refused with `status`, answered in OpenAI's error envelope naming `param`."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 placement: Placement | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.placement = status, message, param, code, placement
        self.headers = headers or {}

    @classmethod
    def fields(cls, problems: list[FieldProblem], prefix: str = "") -> "Refused":
        """400 naming the first field refused, with every problem in the message."""
        return cls(400, "; ".join(f"{prefix}{p.field}: {p.reason}" for p in problems), param=problems[0].field,
                   code="invalid_value")


@api.exception_handler(Refused)
async def _refused(request: Request, exc: Refused) -> JSONResponse:
    headers = {REASON_HEADER: _header(exc.placement.reason)} if exc.placement else {}
    return api_error(exc.status, exc.message, exc.param, exc.code, {**headers, **exc.headers})


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    return api_error(exc.status_code, str(exc.detail), headers=exc.headers)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _validation_error(exc.errors())


def _validation_error(errors) -> JSONResponse:
    """400 naming the first invalid field (its name, as the caller sent it), every error in the message."""
    def field(error) -> str:
        return ".".join(str(part) for part in error["loc"] if part not in ("body", "query", "path", "header"))

    message = "; ".join(f"{field(e) or 'body'}: {e['msg']}" for e in errors)
    return api_error(400, message, param=field(errors[0]) or None, code="invalid_value")


def _header(text: str) -> str:
    """A header value from any text: HTTP headers are Latin-1, and a reason may quote a caller's input (a region
    in any script); non-ASCII characters are escaped."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


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


async def create_body(request: Request) -> CreateVideo:
    """The create request from a multipart form (as the openai SDK sends it, `extra_body` as more fields) or JSON."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()
            fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
            if len(fields) != len(form):
                raise Refused(400, "input_reference: reference images are not supported; send the prompt alone",
                              param="input_reference", code="unsupported_parameter")
        else:
            fields = await request.json()
        return CreateVideo.model_validate(fields)
    except ValidationError as exc:
        raise _ValidationRefused(exc.errors()) from None
    except ValueError:
        raise Refused(400, "the body is neither JSON nor a multipart form", code="invalid_body") from None


class _ValidationRefused(Exception):
    def __init__(self, errors):
        super().__init__("invalid request")
        self.errors = errors


@api.exception_handler(_ValidationRefused)
async def _invalid_create(request: Request, exc: _ValidationRefused) -> JSONResponse:
    return _validation_error(exc.errors)


# The router calls its tiers over gRPC by default (`tier_calls`); gRPC caps a message at 4 MiB unless told otherwise,
# and a result carries the clip's MP4: the router takes results up to RESULT_MAX_BYTES.
RESULT_MAX_BYTES = 256 * 1024 * 1024


@serve.deployment(ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": {
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(RESULT_MAX_BYTES)}}}, max_ongoing_requests=200)
@serve.ingress(api)
class Router:
    async def __init__(self, config: dict, edge, cloud, board, insecure_local: bool = False):
        import os

        self.cfg = ServeConfig.model_validate(config)
        self.callers = callers_for(self.cfg.auth, dict(os.environ), insecure_local)
        self.admission = CallerAdmission()
        self.adapters = AdapterCatalog(min(tier.alias_poll_s for tier in self.cfg.tiers.values()))
        # streaming handles, made once: each `options()` call makes a new handle with its own request router
        self.handles = {tier: handle.options(stream=True, _by_reference=self.cfg.tier_calls == "object_store")
                        for tier, handle in (("edge", edge), ("cloud", cloud))}
        self.board = board
        self.renders = AsyncRenderStore(self.cfg.renders_uri)
        self.outstanding = {"edge": 0, "cloud": 0}
        self.reports: list[TierReport] = []
        self.background: set[asyncio.Task] = set()
        self.live: dict[str, RenderStatus] = {}  # renders this router is running: their freshest record
        self.running: dict[str, asyncio.Task] = {}
        self.held_polls: set[str] = set()  # renders one of whose polls is being held (at most one each)
        self.started = int(time.time())
        self.metrics = RouterMetrics()
        self._spawn(self._refresh_forever())
        self._spawn(self._sweep_forever())

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task

    async def _sweep_forever(self) -> None:
        """Delete asynchronous renders past their retention (every replica sweeps; deleting twice is harmless)."""
        while True:
            try:
                await self.renders.sweep(self.cfg.renders_retention_s)
            except Exception as exc:  # the store being away must not take the router down; the next sweep heals
                log.warning("sweeping old renders failed: %s", exc)
            await asyncio.sleep(min(self.cfg.renders_retention_s / 10, 600))

    async def _renew_lease(self, render_id: str, writing: asyncio.Lock, finished: asyncio.Event) -> None:
        """While this router renders `render_id`, keep its lease ahead of the clock and its stored progress fresh.
        Writes hold `writing`, so the final record, written under it after `finished` is set, is never overwritten
        by a late renewal. A render deleted meanwhile (through any router) is cancelled."""
        while not finished.is_set():
            try:
                await asyncio.wait_for(finished.wait(), self.cfg.async_lease_s / 3)
                return
            except TimeoutError:
                pass
            async with writing:
                if finished.is_set():
                    return
                try:
                    stored = await self.renders.read_status(render_id)
                    if stored.deleted or not stored.active or render_id not in self.live:  # deleted, or lapsed
                        if render_id in self.running:
                            self.running[render_id].cancel()
                        return
                    await self.renders.write_status(self.live[render_id].model_copy(
                        update={"lease_until": time.time() + self.cfg.async_lease_s}))
                except Exception as exc:  # the next renewal may get through before the lease lapses
                    log.warning("could not renew the lease of render %s: %s", render_id, exc)

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

    async def _stream(self, tier: str, request: VideoRequest, on_step, stills: bool) -> dict:
        """The replica's result (with the thumbnail and spritesheet when `stills`), `on_step(step, steps)` called
        as its sampler reports; cancelling the caller cancels the replica's call (a queued render leaves its queue,
        a running one stops at its next step)."""
        events = self.handles[tier].render_stream.remote(request, stills=stills)
        ended = False
        try:
            async for event in events:
                if "step" not in event:
                    ended = True
                    return event
                if on_step is not None:
                    on_step(event["step"], event["steps"])
            raise RuntimeError(f"the {tier} replica ended the render without a result")
        finally:
            if not ended:
                events.cancel()

    async def _render(self, tier: str, request: VideoRequest, retry: bool, on_step=None, stills: bool = False) -> dict:
        """The tier's answer to `request` (`_stream`); a replica dying under it is RenderTookReplicaDown unless
        `retry` (`retries_after_replica_death`), when the render is tried once more."""
        self.outstanding[tier] += 1
        try:
            try:
                return await self._stream(tier, request, on_step, stills)
            except RayActorError as exc:
                if not retry:
                    log.warning("%s replica died rendering a clip larger than the tier's default (%s); not retried",
                                tier, exc)
                    raise RenderTookReplicaDown(tier) from exc
                log.warning("%s replica died during a render (%s); retrying once", tier, exc)
                return await self._stream(tier, request, on_step, stills)
        finally:
            self.outstanding[tier] -= 1

    def _tier_capabilities(self) -> dict[str, Capabilities]:
        """What each tier's replicas report their model makes (tiers with no replica reporting are left out)."""
        return {name: reports[0].capabilities for name in self.cfg.tiers if (reports := self._reports_of(name))}

    def _place(self, body: VideoRequest, model: str | None = None, caller_problem=lambda p, caps: p,
               adapter_cannot: dict[str, list[FieldProblem]] | None = None
               ) -> tuple[Placement, TierState, Capabilities]:
        """Where `body` renders: (the placement, its tier's state, its tier's capabilities), or Refused. `model`
        names a tier or the model a tier serves (None: any tier); `caller_problem` restates a problem in the fields
        the caller sent (`seconds`, `size`); `adapter_cannot`: why each tier cannot render with the request's
        adapter (`_adapter_problems`)."""
        caps = self._tier_capabilities()
        if not caps:
            self.metrics.refused(503)
            raise Refused(503, "no replica of either tier is reporting yet; retry shortly", code="not_ready")
        problems = check_limits(body, self.cfg.limits)
        if problems:
            raise Refused.fields(problems)
        cannot = {tier: [caller_problem(p, c) for p in check_limits(body, self.cfg.limits, c,
                                                                    self.cfg.tiers[tier].work_budget)]
                  for tier, c in caps.items()}
        if model is not None:
            named = {tier for tier in self.cfg.tiers
                     if model == tier or any(model in (r.serves.model, r.serves.label) for r in self._reports_of(tier))}
            if not named:
                served = sorted({r.serves.model for r in self.reports})
                raise Refused(400, f"model {model!r} is not served here; name a tier ({', '.join(self.cfg.tiers)}) "
                                   f"or a model one serves ({', '.join(served)}), or leave it out",
                              param="model", code="model_not_found")
            for tier in caps:
                if tier not in named:
                    cannot[tier] = [FieldProblem("model", f"{model} is not served by the {tier} tier")]
        for tier, found in (adapter_cannot or {}).items():
            if tier in cannot:
                cannot[tier] = cannot[tier] + found
        capable = [tier for tier in caps if not cannot[tier]]
        if not capable:
            if len(caps) < len(self.cfg.tiers):
                self.metrics.refused(503)
                raise Refused(503, "no reporting tier's model can make this request and "
                                   f"{', '.join(t for t in self.cfg.tiers if t not in caps)} is not reporting yet; "
                                   "retry shortly", code="not_ready")
            problems = [FieldProblem(p.field, f"{tier}: {p.reason}") for tier, found in cannot.items() for p in found]
            raise Refused.fields(problems)
        states = [s.model_copy(update={"cannot": "; ".join(f"{p.field}: {p.reason}" for p in cannot[s.name])
                                       if cannot.get(s.name) else None})
                  for s in tier_states(self.cfg, self.reports, self.outstanding, body)]
        placement = place(body.placement_request(), states, self.cfg.policy)
        if placement.tier is None:
            self.metrics.refused(placement.status)
            raise Refused(placement.status, placement.reason, code="not_placed", placement=placement)
        self.metrics.placed(placement.tier, spilled=placement.reason.startswith("spilled"))
        return placement, next(t for t in states if t.name == placement.tier), caps[placement.tier]

    async def _adapter_problems(self, body: VideoRequest) -> dict[str, list[FieldProblem]]:
        """Why each reporting tier cannot render with the adapter `body` names (none named: no problems)."""
        if body.lora is None:
            return {}
        served = {name: reports[0].serves for name in self.cfg.tiers if (reports := self._reports_of(name))}
        return await self.adapters.problems(body.lora, self.cfg.tiers, served)

    def _admit(self, caller: str) -> None:
        """Refused 429 when `caller` is over its create rate or has its most renders running (`cluster.callers`),
        with when to retry where that is known."""
        limits = self.callers.limits_of(caller) if self.callers is not None else CallerLimits()
        refusal = self.admission.admit(caller, limits, soonest_free_s=lambda: self._soonest_end(caller))
        if refusal is not None:
            self.metrics.refused(429)
            raise Refused(429, refusal.message, code=refusal.code, headers=retry_headers(refusal.retry_after_s))

    def _soonest_end(self, caller: str) -> float | None:
        """Seconds until the first of `caller`'s renders running here is estimated to end (at least a second)."""
        ends = [r.created_at + r.estimate_ms / 1000 for r in self.live.values() if r.owner == caller]
        return max(min(ends) - time.time(), 1.0) if ends else None

    # --- the Videos API ---

    def _video(self, record: RenderStatus, status_code: int = 200) -> JSONResponse:
        """The video object of `record` (this router's fresher copy while it renders it), with the poll hint."""
        record = self.live.get(record.id, record)
        body = VideoObject.of(record, self.cfg.renders_retention_s)
        headers = {POLL_AFTER_HEADER: str(poll_after_ms(record)), TIER_HEADER: record.tier,
                   REASON_HEADER: _header(record.reason)}
        if record.lora is not None:
            headers[LORA_HEADER] = _header(record.lora)
        return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=headers)

    async def _record(self, render_id: str, caller: str) -> RenderStatus:
        """The caller's render, or 404: one deleted, or another caller's, is not there for it. One this router runs
        is answered from memory (polls of it cost no storage read; a deletion through another router reaches it at
        the next lease renewal)."""
        record = self.live.get(render_id)
        if record is None:
            try:
                record = await self.renders.read_current(render_id)
            except UnknownRender:
                pass
        if record is None or record.deleted or record.owner != caller or \
                expired(record.id, self.cfg.renders_retention_s):
            raise Refused(404, f"no video {render_id}", param="video_id", code="video_not_found")
        return record

    async def _idempotent(self, caller: str, key: str, digest: str, bound: tuple[str, str] | None
                          ) -> RenderStatus | None:
        """The render `key` is `bound` to (the same request sent again; None when the key is new), or Refused 422
        when that render was made from another request."""
        if bound is None:
            return None
        bound_id, bound_digest = bound
        if bound_digest != digest:
            raise Refused(422, f"{IDEMPOTENCY_HEADER} {key!r} was used for another request; send a new key",
                          param=IDEMPOTENCY_HEADER, code="idempotency_key_reused")
        return await self._record(bound_id, caller)

    @api.post("/v1/videos", response_model=VideoObject, summary="Create a video: answered at once, render to poll",
              responses={400: {"description": "a field is invalid, over this deployment's limits, or not one the "
                                              "model can make (`param` names it)"},
                         401: {"description": "missing or wrong token"},
                         413: {"description": "request body too large"},
                         422: {"description": "the Idempotency-Key was used for another request"},
                         451: {"description": "no tier may serve the caller's region"},
                         503: {"description": "no tier can take the request now (reason given)"}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": CreateVideo.model_json_schema()},
                  "multipart/form-data": {"schema": CreateVideo.model_json_schema()}}}},
              dependencies=[Depends(authorized)])
    async def create_video(self, request: Request,
                           idempotency_key: str | None = Header(None, alias=IDEMPOTENCY_HEADER, max_length=256)):
        caller = caller_of(request)
        body = await create_body(request)
        digest = body.digest()
        if idempotency_key is not None and (again := await self._idempotent(
                caller, idempotency_key, digest, await self.renders.idempotency_bound(caller, idempotency_key))):
            return self._video(again)
        clip_body, problems = body.clip_request()
        if problems:
            raise Refused.fields(problems)
        self._admit(caller)  # holds one of the caller's render slots: the render started gives it back as it ends
        started = False
        try:
            record, started = await self._create(caller, body, clip_body, digest, idempotency_key)
        finally:
            if not started:
                self.admission.ended(caller)
        return self._video(record)

    async def _create(self, caller: str, body: CreateVideo, clip_body: VideoRequest, digest: str,
                      idempotency_key: str | None) -> tuple[RenderStatus, bool]:
        """(the render the create answers with, whether a new render started for it)."""
        placement, state, caps = self._place(clip_body, body.model, lambda p, c: caller_field(p, body, c),
                                             await self._adapter_problems(clip_body))
        record = self._new_record(caller, clip_body, placement, state, caps, digest)
        await self.renders.write_status(record)
        if idempotency_key is not None:  # bound create-only: of two retries racing, one render runs
            bound = await self.renders.claim_idempotency(caller, idempotency_key, record.id, digest)
            if bound[0] != record.id:
                await self.renders.delete(record)
                return await self._idempotent(caller, idempotency_key, digest, bound), False
        self._start(record, clip_body, caps)
        return record, True

    def _new_record(self, caller: str, body: VideoRequest, placement: Placement, state: TierState,
                    caps: Capabilities, digest: str | None = None) -> RenderStatus:
        clip, _ = resolve_clip(body, caps)
        reports = self._reports_of(placement.tier)
        return RenderStatus(id=new_render_id(), owner=caller, status="queued", tier=placement.tier,
                            reason=placement.reason, model=reports[0].serves.model if reports else placement.tier,
                            prompt=clip.prompt, frames=clip.frames, height=clip.height, width=clip.width,
                            steps=clip.steps, created_at=time.time(), estimate_ms=state.estimated_ms(),
                            lora=body.lora, request_sha256=digest, lease_until=time.time() + self.cfg.async_lease_s)

    def _start(self, record: RenderStatus, body: VideoRequest, caps: Capabilities) -> None:
        """Render `record` (written already) in the background."""
        self.live[record.id] = record
        self.running[record.id] = self._spawn(self._run_async(record, body, retries_after_replica_death(caps, body)))

    def _stepped(self, render_id: str, step: int, steps: int) -> None:
        """A sampler step of a render this router runs: its live record goes in progress."""
        record = self.live.get(render_id)
        if record is not None:
            self.live[render_id] = record.model_copy(update={"status": "in_progress",
                                                             "progress": min(99, 100 * step // steps)})

    async def _run_async(self, record: RenderStatus, request: VideoRequest, retry: bool) -> None:
        started = time.perf_counter()
        writing, finished = asyncio.Lock(), asyncio.Event()
        renewing = asyncio.get_running_loop().create_task(self._renew_lease(record.id, writing, finished))
        try:
            try:
                result = await self._render(record.tier, request, retry, stills=True,
                                            on_step=lambda step, steps: self._stepped(record.id, step, steps))
                done = await self._finished(record, result)
            except RenderTookReplicaDown as exc:
                done = self._failed(record, "replica_lost", str(exc))
            except asyncio.CancelledError:  # deleted: the DELETE wrote its tombstone
                log.info("render %s deleted while %s; its render was cancelled", record.id,
                         self.live.get(record.id, record).status)
                self.metrics.finished(record.tier, "cancelled")
                return
            except Exception:  # the details (paths, hosts, library internals) go to the log, not to the caller
                log.exception("asynchronous render %s failed", record.id)
                done = self._failed(record, "render_failed", f"the render failed on the {record.tier} tier; retry, "
                                                             f"or ask the operator about render {record.id}")
            self.metrics.finished(record.tier, "done" if done.status == "completed" else "failed",
                                  time.perf_counter() - started)
            async with writing:
                finished.set()
                await self._record_end(done)
        finally:
            finished.set()
            await renewing
            self.live.pop(record.id, None)
            self.running.pop(record.id, None)
            self.admission.ended(record.owner)

    def _failed(self, record: RenderStatus, code: str, message: str) -> RenderStatus:
        return record.model_copy(update={"status": "failed", "error_code": code, "error": message,
                                         "completed_at": time.time(), "lease_until": None})

    async def _finished(self, record: RenderStatus, result: dict) -> RenderStatus:
        """The record of a render the replica answered; a completed one's video and thumbnail are written."""
        if "rejected" in result:
            return self._failed(record, result.get("code", "prompt_rejected"),
                                f"{result.get('param', 'prompt')}: {result['rejected']}")
        await self.renders.write_outputs(record.id, result["mp4"], result["jpeg"], result["spritesheet"])
        return record.model_copy(update={"status": "completed", "progress": 100, "replica": result["replica"],
                                         "model": result["model"], "completed_at": time.time(), "lease_until": None})

    async def _record_end(self, done: RenderStatus) -> None:
        """Store the end of a render, unless it was deleted meanwhile (through another router): then its outputs go."""
        try:
            if (await self.renders.read_status(done.id)).deleted:
                await self.renders.remove_outputs(done.id)
                return
            await self.renders.write_status(done)
        except Exception:  # the render stays active until its lease lapses; the log says why
            log.exception("could not record the end of render %s", done.id)

    @api.get("/v1/videos", response_model=VideoList, summary="The caller's videos, a page at a time",
             dependencies=[Depends(authorized)])
    async def list_videos(self, request: Request, after: str | None = Query(None, max_length=64),
                          limit: int = Query(20, ge=1, le=100),
                          order: Literal["asc", "desc"] = Query("desc")) -> JSONResponse:
        records = await self.renders.records(caller_of(request), self.cfg.renders_retention_s)
        try:
            found, more = page(records, after, limit, order)
        except KeyError:
            raise Refused(400, f"after: no video {after} to continue from", param="after",
                          code="video_not_found") from None
        data = [VideoObject.of(self.live.get(r.id, r), self.cfg.renders_retention_s) for r in found]
        listing = VideoList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                            has_more=more)
        return JSONResponse(listing.model_dump(mode="json"))

    @api.get("/v1/videos/{video_id}", response_model=VideoObject, summary="A video's status and progress",
             responses={404: {"description": "no such video"}}, dependencies=[Depends(authorized)])
    async def retrieve_video(self, request: Request, video_id: str = Path(pattern=RENDER_ID_PATTERN)):
        caller = caller_of(request)
        record = await self._record(video_id, caller)
        if (render := self.running.get(video_id)) is not None and video_id not in self.held_polls:
            # A render this router runs: the poll is held until it ends (at most POLL_HOLD_S), so a client needs
            # fewer polls, each an HTTP request through the proxy and the router. One poll a render is held at a
            # time (another answers at once), so polling many times at once holds no more of the router's request
            # slots than the renders a caller may have running (its max_concurrent_renders).
            self.held_polls.add(video_id)
            try:
                await asyncio.wait({render}, timeout=POLL_HOLD_S)
            finally:
                self.held_polls.discard(video_id)
            record = await self._record(video_id, caller)
        return self._video(record)

    @api.delete("/v1/videos/{video_id}", response_model=VideoDeleted,
                summary="Delete a video: a queued render never runs, a running one stops at its next step",
                responses={404: {"description": "no such video"}}, dependencies=[Depends(authorized)])
    async def delete_video(self, request: Request, video_id: str = Path(pattern=RENDER_ID_PATTERN)) -> VideoDeleted:
        record = await self._record(video_id, caller_of(request))
        await self.renders.delete(record)
        self.live.pop(video_id, None)  # answered 404 from now on, though its render may take a step to stop
        if (task := self.running.get(video_id)) is not None:
            task.cancel()
        return VideoDeleted(id=video_id)

    @api.get("/v1/videos/{video_id}/content", summary="The finished MP4, its thumbnail (a JPEG frame), or its "
                                                      "spritesheet (a JPEG grid of up to 16 frames; the "
                                                      "X-Vidgen-Spritesheet header gives the grid)",
             responses={200: {"content": {"video/mp4": {}, "image/jpeg": {}}}, 404: {"description": "no such video"},
                        409: {"description": "not completed"}}, dependencies=[Depends(authorized)])
    async def video_content(self, request: Request, video_id: str = Path(pattern=RENDER_ID_PATTERN),
                            variant: Literal["video", "thumbnail", "spritesheet"] = Query("video")) -> Response:
        record = await self._record(video_id, caller_of(request))
        if record.status != "completed":
            raise Refused(409, f"video {video_id} is {record.status}; download it once completed",
                          code="video_not_ready")
        headers = {TIER_HEADER: record.tier}
        if variant == "spritesheet":
            headers[SPRITESHEET_HEADER] = sprite_layout(record.frames, record.height, record.width).header()
        suffix, media = {"video": (".mp4", "video/mp4"), "thumbnail": (".jpg", "image/jpeg"),
                         "spritesheet": (SPRITESHEET, "image/jpeg")}[variant]
        try:
            content = await self.renders.read_video(video_id, suffix)
        except NotFound:  # a render finished before its router kept this variant, or deleted meanwhile
            raise Refused(404, f"variant: video {video_id} has no stored {variant}; download the video instead",
                          param="variant", code="variant_not_found") from None
        return Response(content, media_type=media, headers=headers)

    # --- vidgen's own routes ---

    @api.get("/", include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        """The playground page (`cluster.playground`): served without a key, as it holds no data."""
        shipped = playground_page()
        return HTMLResponse(shipped.html, headers=shipped.headers)

    @api.get("/healthz", summary="Liveness, and how many replicas each tier has reporting")
    async def healthz(self) -> dict:
        replicas = {name: len(self._reports_of(name)) for name in self.cfg.tiers}
        return {"status": "ok" if all(replicas.values()) else "degraded", "replicas": replicas}

    @api.get("/v1/models", response_model=ModelsResponse, summary="What each tier serves (OpenAI's list shape)",
             dependencies=[Depends(authorized)])
    async def models(self) -> ModelsResponse:
        entries = []
        for state in tier_states(self.cfg, self.reports, self.outstanding):
            reports = self._reports_of(state.name)
            shares = [r.prompt_ood_share for r in reports if r.prompt_ood_share is not None]
            entries.append(ModelEntry(id=state.name, created=self.started, tier=state.name, replicas=state.replicas,
                                      serves=reports[0].serves if reports else None,
                                      capabilities=reports[0].capabilities if reports else None,
                                      prompt_ood_share=sum(shares) / len(shares) if shares else None,
                                      seconds_per_clip=state.seconds_per_clip if state.healthy else None))
        return ModelsResponse(data=entries)

    @api.post("/v1/videos/sync", summary="Render a clip and answer with the MP4 (202 and a video to poll when it "
                                         "is estimated over sync_max_ms)",
              responses={200: {"content": {"video/mp4": {}}, "description": "the clip"},
                         202: {"model": VideoObject, "description": "accepted; poll GET /v1/videos/{id}"},
                         400: {"description": "a field is invalid, over this deployment's limits, or not one the "
                                              "model can make"},
                         401: {"description": "missing or wrong token"},
                         413: {"description": "request body too large"},
                         451: {"description": "no tier may serve the caller's region"},
                         503: {"description": "no tier can take the request now (reason given)"}},
              dependencies=[Depends(authorized)])
    async def create_video_sync(self, request: Request, body: VideoRequest):
        caller = caller_of(request)
        self._admit(caller)  # holds one of the caller's render slots until its render ends
        handed_over = False
        try:
            placement, state, caps = self._place(body, adapter_cannot=await self._adapter_problems(body))
            if state.estimated_ms() > self.cfg.sync_max_ms:  # too long to hold the connection: a render to poll
                record = self._new_record(caller, body, placement, state, caps)
                await self.renders.write_status(record)
                self._start(record, body, caps)
                handed_over = True
                response = self._video(record, status_code=202)
                response.headers["Location"] = f"/v1/videos/{record.id}"
                return response
            return await self._render_now(body, placement, caps)
        finally:
            if not handed_over:
                self.admission.ended(caller)

    async def _render_now(self, body: VideoRequest, placement: Placement, caps: Capabilities) -> Response:
        """The synchronous answer: the clip's MP4, or Refused."""
        started = time.perf_counter()
        headers = {TIER_HEADER: placement.tier, REASON_HEADER: _header(placement.reason)}
        try:
            result = await self._render(placement.tier, body, retries_after_replica_death(caps, body))
        except RenderTookReplicaDown as exc:
            self.metrics.finished(placement.tier, "failed")
            raise Refused(503, str(exc), code="replica_lost", placement=placement) from None
        except RayActorError as exc:  # its replicas died twice in a row: the tier is not there now
            self.metrics.finished(placement.tier, "failed")
            raise Refused(503, f"{placement.tier} replicas died during the render ({type(exc).__name__}); retry",
                          code="replica_lost", placement=placement) from None
        except Exception:
            self.metrics.finished(placement.tier, "failed")
            raise
        if "rejected" in result:
            self.metrics.finished(placement.tier, "rejected")
            param = result.get("param", "prompt")
            raise Refused(400, f"{param}: {result['rejected']}", param=param,
                          code=result.get("code", "prompt_rejected"), placement=placement)
        self.metrics.finished(placement.tier, "done", time.perf_counter() - started)
        return Response(result["mp4"], media_type="video/mp4",
                        headers={**headers, REPLICA_HEADER: result["replica"], MODEL_HEADER: _header(result["model"])})
