"""The ingress deployment: FastAPI routes, bearer-token auth, limits, placement, sync and asynchronous renders.

A request is checked (token, limits), placed by `cluster.placement.place` on the tier state the replicas reported,
then rendered through that tier's DeploymentHandle. Short renders answer with the MP4; long ones (or `mode: async`)
answer 202 with a job id, and the video and its status are written to `jobs_uri`, where any router replica can
find them. A render whose replica dies is retried once on the same tier: the sampler is deterministic, so the retry
makes the same clip.
"""

import asyncio
import hashlib
import hmac
import logging
import time
import uuid

from fastapi import Depends, FastAPI, HTTPException, Path
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve
from ray.exceptions import RayActorError
from ray.serve import metrics

from cluster.api import (
    JOB_ID_PATTERN,
    REASON_HEADER,
    REPLICA_HEADER,
    TIER_HEADER,
    JobStatus,
    ModelsResponse,
    TierInfo,
    VideoRequest,
    check_limits,
)
from cluster.placement import Placement, TierState, place
from cluster.serve_config import AuthConfig, ServeConfig
from storage.objectstore import NotFound, ObjectStore, parse_uri

log = logging.getLogger(__name__)

# Request bodies are small JSON objects (the prompt is at most 1000 characters); anything far larger is refused
# before it is parsed.
MAX_BODY_BYTES = 16 * 1024
LATENCY_BOUNDARIES_MS = [50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000]

api = FastAPI(title="vidgen", version="1",
              description="Text-to-video clips from a diffusion transformer, placed per request on an edge tier "
                          "(int8, fewer steps, CPU) or a cloud tier (full model). Send `Authorization: Bearer "
                          "<token>`. The chosen tier and the reason come back in the X-Vidgen-Tier and "
                          "X-Vidgen-Placement-Reason headers.")
bearer = HTTPBearer(auto_error=False, description="the token configured for this deployment")


class BodyLimit:
    """Answer 413 to a request body over the limit: by its Content-Length before anything reads it, or, for a
    chunked body, once the bytes received pass the limit (the route's own answer to the cut body is dropped).

    A plain ASGI middleware: Starlette's `@app.middleware("http")` wraps every request in extra tasks and streams
    (measured: the trivial request's p50 1.4x a bare Serve app with it, see docs/BENCHMARKS.md).
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = JSONResponse({"detail": [{"loc": ["body"], "msg": f"request body over {self.max_bytes} bytes"}]},
                                 status_code=413)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            return await too_large(scope, receive, send)
        seen = {"bytes": 0, "over": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > self.max_bytes:
                    seen["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}  # read no further
            return message

        async def guarded_send(message):
            if not seen["over"]:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)
        if seen["over"]:
            await too_large(scope, receive, send)


api.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)


def token_digest(auth: AuthConfig, environ: dict[str, str], insecure_local: bool = False) -> str | None:
    """The sha256 a presented token must match; None only when serving without auth was asked for."""
    if auth.token_sha256:
        return auth.token_sha256
    token = environ.get(auth.token_env)
    if token:
        return hashlib.sha256(token.encode()).hexdigest()
    if insecure_local:
        return None
    raise RuntimeError(f"no bearer token configured: set {auth.token_env} where the router runs, or write "
                       "auth.token_sha256 in the serve config, or serve on loopback with --insecure-local")


async def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """Route dependency: FastAPI solves it before it validates the body, so a caller without the token learns
    nothing about the API but 401."""
    serve.get_replica_context().servable_object.authorize(credentials)


def _error(status: int, detail, placement: Placement | None = None) -> JSONResponse:
    headers = {REASON_HEADER: placement.reason} if placement else None
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=200)
@serve.ingress(api)
class Router:
    async def __init__(self, config: dict, edge, cloud, board, insecure_local: bool = False):
        import os

        self.cfg = ServeConfig.model_validate(config)
        self.digest = token_digest(self.cfg.auth, dict(os.environ), insecure_local)
        self.handles = {"edge": edge, "cloud": cloud}
        self.board = board
        self.store = ObjectStore()
        self.jobs = parse_uri(self.cfg.jobs_uri)
        self.outstanding = {"edge": 0, "cloud": 0}
        self.reports: list[dict] = []
        self.background: set[asyncio.Task] = set()
        self.requests = metrics.Counter("vidgen_requests", "requests by tier and outcome",
                                        tag_keys=("tier", "outcome"))
        self.latency = metrics.Histogram("vidgen_request_latency_ms", "time to the answer, by tier",
                                         boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("tier",))
        self.placements = metrics.Counter("vidgen_placements", "placements by tier and whether they spilled",
                                          tag_keys=("tier", "spilled"))
        self.refusals = metrics.Counter("vidgen_refusals", "requests no tier could take, by status",
                                        tag_keys=("status",))
        self._spawn(self._refresh_forever())

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def _refresh_forever(self) -> None:
        while True:
            try:
                self.reports = await self.board.snapshot.remote()
            except Exception as exc:
                log.warning("tier board unreachable: %s", exc)
            await asyncio.sleep(self.cfg.report_every_s)

    def authorize(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if self.digest is None:
            return
        presented = hashlib.sha256(credentials.credentials.encode()).hexdigest() if credentials else ""
        if not hmac.compare_digest(presented, self.digest):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    def _tier_states(self, steps: int | None) -> list[TierState]:
        states = []
        for name, tier in self.cfg.tiers.items():
            reports = [r for r in self.reports if r["tier"] == name]
            per_step = sum(r["seconds_per_step"] for r in reports) / len(reports) if reports else float("inf")
            clip_steps = steps or (reports[0]["default_steps"] if reports else 1)
            held = sum(r["held"] for r in reports)
            states.append(TierState(name=name, healthy=bool(reports), replicas=len(reports),
                                    queue_depth=max(held, self.outstanding[name]),
                                    seconds_per_clip=per_step * clip_steps, cost_per_clip=tier.cost_per_clip,
                                    regions=tier.regions))
        return states

    async def _render(self, tier: str, payload: dict) -> dict:
        self.outstanding[tier] += 1
        try:
            try:
                return await self.handles[tier].render.remote(payload)
            except RayActorError as exc:
                log.warning("%s replica died during a render (%s); retrying once", tier, exc)
                return await self.handles[tier].render.remote(payload)
        finally:
            self.outstanding[tier] -= 1

    def _served_shape(self) -> tuple[int, int, int] | None:
        """The clip shape the replicas report serving (both tiers serve one shape); None before any reports."""
        serves = next((r["serves"] for r in self.reports), None)
        return (serves["frames"], serves["height"], serves["width"]) if serves else None

    def _job_uri(self, job_id: str, suffix: str) -> str:
        return self.jobs.join(f"{job_id}{suffix}").uri

    async def _write_status(self, status: JobStatus) -> None:
        data = status.model_dump_json(indent=2).encode()
        await asyncio.to_thread(self.store.write, self._job_uri(status.id, ".json"), data)

    async def _run_job(self, status: JobStatus, payload: dict) -> None:
        started = time.perf_counter()
        try:
            result = await self._render(status.tier, payload)
            if "rejected" in result:
                done = status.model_copy(update={"status": "failed", "error": f"prompt: {result['rejected']}"})
            else:
                await asyncio.to_thread(self.store.write, self._job_uri(status.id, ".mp4"), result["mp4"])
                done = status.model_copy(update={"status": "done", "replica": result["replica"],
                                                 "video_url": self._job_uri(status.id, ".mp4"),
                                                 "content_url": f"/v1/videos/{status.id}/content"})
        except Exception as exc:
            log.exception("render job %s failed", status.id)
            done = status.model_copy(update={"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        self.requests.inc(tags={"tier": status.tier, "outcome": done.status})
        self.latency.observe(1000 * (time.perf_counter() - started), tags={"tier": status.tier})
        try:
            await self._write_status(done)
        except Exception:  # the video (if any) is written; the status stays `queued` and the log says why
            log.exception("could not record the end of render job %s", status.id)

    @api.get("/healthz", summary="Liveness, and how many replicas each tier has reporting")
    async def healthz(self) -> dict:
        replicas = {name: sum(r["tier"] == name for r in self.reports) for name in self.cfg.tiers}
        return {"status": "ok" if all(replicas.values()) else "degraded", "replicas": replicas}

    @api.get("/v1/models", response_model=ModelsResponse, summary="What each tier serves",
             dependencies=[Depends(authorized)])
    async def models(self) -> ModelsResponse:
        tiers = []
        for state in self._tier_states(None):
            serves = next((r["serves"] for r in self.reports if r["tier"] == state.name), None)
            tiers.append(TierInfo(tier=state.name, replicas=state.replicas, serves=serves,
                                  seconds_per_clip=state.seconds_per_clip if state.healthy else None))
        return ModelsResponse(tiers=tiers)

    @api.post("/v1/videos", summary="Render a clip: the MP4 (200) or a job to poll (202)",
              responses={200: {"content": {"video/mp4": {}}, "description": "the clip"},
                         202: {"model": JobStatus, "description": "accepted; poll GET /v1/videos/{id}"},
                         401: {"description": "missing or wrong token"},
                         413: {"description": "request body too large"},
                         422: {"description": "a field is invalid or over this deployment's limits"},
                         451: {"description": "no tier may serve the caller's region"},
                         503: {"description": "no tier can take the request now (reason given)"}},
              dependencies=[Depends(authorized)])
    async def create_video(self, body: VideoRequest):
        started = time.perf_counter()
        shape = self._served_shape()
        if shape is None:
            self.refusals.inc(tags={"status": "503"})
            return _error(503, "no replica of either tier is reporting yet; retry shortly")
        problems = check_limits(body, self.cfg.limits, shape)
        if problems:
            return _error(422, [{"loc": ["body", p.field], "msg": p.reason} for p in problems])
        states = self._tier_states(body.steps)
        placement = place(body.placement_request(shape), states, self.cfg.policy)
        if placement.tier is None:
            self.refusals.inc(tags={"status": str(placement.status)})
            return _error(placement.status, placement.reason, placement)
        spilled = placement.reason.startswith("spilled")
        self.placements.inc(tags={"tier": placement.tier, "spilled": str(spilled).lower()})
        headers = {TIER_HEADER: placement.tier, REASON_HEADER: placement.reason}
        payload = {"prompt": body.prompt, "seed": body.seed, "steps": body.steps, "guidance": body.guidance}
        estimate_ms = next(t for t in states if t.name == placement.tier).estimated_ms()
        if body.mode == "async" or (body.mode == "auto" and estimate_ms > self.cfg.sync_max_ms):
            status = JobStatus(id=uuid.uuid4().hex, status="queued", tier=placement.tier, reason=placement.reason)
            await self._write_status(status)
            self._spawn(self._run_job(status, payload))
            return JSONResponse(status.model_dump(), status_code=202,
                                headers={**headers, "Location": f"/v1/videos/{status.id}"})
        try:
            result = await self._render(placement.tier, payload)
        except RayActorError as exc:  # its replicas died twice in a row: the tier is not there now
            self.requests.inc(tags={"tier": placement.tier, "outcome": "failed"})
            return _error(503, f"{placement.tier} replicas died during the render ({type(exc).__name__}); retry",
                          placement)
        except Exception:
            self.requests.inc(tags={"tier": placement.tier, "outcome": "failed"})
            raise
        if "rejected" in result:
            self.requests.inc(tags={"tier": placement.tier, "outcome": "rejected"})
            return _error(422, [{"loc": ["body", "prompt"], "msg": result["rejected"]}], placement)
        self.requests.inc(tags={"tier": placement.tier, "outcome": "done"})
        self.latency.observe(1000 * (time.perf_counter() - started), tags={"tier": placement.tier})
        return Response(result["mp4"], media_type="video/mp4", headers={**headers, REPLICA_HEADER: result["replica"]})

    async def _read_status(self, job_id: str) -> JobStatus:
        try:
            data = await asyncio.to_thread(self.store.read, self._job_uri(job_id, ".json"))
        except NotFound:
            raise HTTPException(404, f"no video job {job_id}") from None
        return JobStatus.model_validate_json(data)

    @api.get("/v1/videos/{job_id}", response_model=JobStatus, summary="A job's status and, once done, its URLs",
             responses={404: {"description": "no such job"}}, dependencies=[Depends(authorized)])
    async def video_status(self, job_id: str = Path(pattern=JOB_ID_PATTERN)) -> JobStatus:
        return await self._read_status(job_id)

    @api.get("/v1/videos/{job_id}/content", summary="The finished MP4",
             responses={200: {"content": {"video/mp4": {}}}, 404: {"description": "no such job"},
                        409: {"description": "not finished"}}, dependencies=[Depends(authorized)])
    async def video_content(self, job_id: str = Path(pattern=JOB_ID_PATTERN)) -> Response:
        status = await self._read_status(job_id)
        if status.status != "done":
            raise HTTPException(409, f"job {job_id} is {status.status}")
        data = await asyncio.to_thread(self.store.read, self._job_uri(job_id, ".mp4"))
        return Response(data, media_type="video/mp4", headers={TIER_HEADER: status.tier})
