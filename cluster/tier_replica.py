"""A tier's replica: one model loaded at a time, sampling batches of requests, reporting its state to the board.

The sampler is not safe to run concurrently (and on a CPU two at once only share the cores), so renders run one
batch at a time on one sampler thread. Requests that arrive together are batched by Ray Serve (`@serve.batch`, up
to the tier's `max_batch_size`, waiting at most `batch_wait_timeout_s` for more): those sharing their shape and
settings are sampled in one call. The requests waiting are held here (up to `max_ongoing_requests`), where the
replica can count them. Every `report_every_s` the replica sends the `TierBoard` (`cluster.tier_board`) a
`TierReport` (`cluster.tier_report`): how many requests it holds and its measured seconds per unit of work, which,
not a guess, is what the placement policy reads, and what its model makes. A tier whose model is an alias follows it
(`cluster.alias_following`): the next version is loaded beside the current one and swapped in between batches. The
replica scores prompts and probes clips (`cluster.monitors`) and may roll its alias back. A render streams its
progress (`render_stream`: step i of n after each sampler step) and stops at the next step when its caller cancels it
(`cluster.render_jobs`: a queued request never reaches the sampler, a running one alone in its sampler call stops it,
one sharing the call with others is dropped and theirs go on). A diffusers tier with `loras` renders each request
with the adapter it names: adapters load unfused on demand into the replica's `AdapterSlots` (at most `max_loras`,
least recently used unloaded first; `vidgen.pipelines.adapters`), each checked against the loaded base by digest, and
only requests with the same adapter share a sampler call.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import ray
import torch
from ray import serve

from cluster.alias_following import FollowFailures, following, label_version, resolved_version, roll_back_alias
from cluster.monitors import PromptMonitor, QualityMonitor, probe_clip
from cluster.render_jobs import RenderJob, SamplingCancelled, sampler_progress
from cluster.serve_config import TierConfig, clip_work
from cluster.tier_report import ServedModel, TierReport
from vidgen.clip_request import Capabilities, ClipRequest, resolve_clip
from vidgen.threads import use_torch_threads

if TYPE_CHECKING:
    from vidgen.pipelines.adapters import AdapterSlots
    from vidgen.pipelines.references import VerifiedModel

log = logging.getLogger(__name__)

# Weight of the newest render in the running estimate of seconds per unit of work.
EMA_WEIGHT = 0.3


@dataclass
class LoadedModel:
    """The model a replica serves now, with what it makes and its measured sampling seconds per unit of work
    (`clip_work`: frames x height x width x steps)."""

    pipeline: object
    capabilities: Capabilities
    serves: ServedModel
    seconds_per_work: float
    drift: object = None  # vidgen.drift.PromptDrift of a model of the built-in world
    adapters: AdapterSlots | None = None  # per-request LoRA adapters of a diffusers tier with `loras`


class AdapterRefused(ValueError):
    """The adapter a request names cannot be rendered here (not served, unreadable, made for another base): the
    caller's to change, answered with 400 naming `lora`."""


class PromptRejected(ValueError):
    """The text encoder refused the prompt (e.g. too many tokens): the caller's fault, answered with 400."""


class Cancelled:
    """The result of a request cancelled while it was sampled."""


def clip_outputs(frames, stills: bool = True) -> tuple[bytes, bytes | None, bytes | None]:
    """(the MP4, a JPEG of its middle frame: the thumbnail, the spritesheet: `cluster.spritesheet`) of uint8 frames
    (T, H, W, 3); the MP4 alone (None, None for the stills) unless `stills`."""
    from PIL import Image

    from cluster.spritesheet import spritesheet
    from storage.video import encode

    if not stills:
        return encode(frames), None, None
    jpeg = io.BytesIO()
    Image.fromarray(frames[len(frames) // 2]).save(jpeg, format="JPEG", quality=90)
    return encode(frames), jpeg.getvalue(), spritesheet(frames)


class TierReplica:
    """Deployed twice, with the tier's config, under the names operators know: EdgeGenerator and CloudGenerator
    (`cluster.serve_app`)."""

    async def __init__(self, tier: str, tier_config: dict, board, report_every_s: float):
        self.cfg = cfg = TierConfig.model_validate(tier_config)
        use_torch_threads(cfg.torch_threads)
        self.sampler_thread = ThreadPoolExecutor(1, thread_name_prefix="sampler", initializer=use_torch_threads,
                                                 initargs=(cfg.torch_threads,))
        self.tier, self.board, self.report_every_s = tier, board, report_every_s
        self.device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self._render_batch.set_max_batch_size(cfg.max_batch_size)
        self._render_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.held = 0
        self.rendered = 0
        self.largest_batch = 0
        self.steps_sampled = 0  # sampler steps run, one per step of each sampler call
        self.verified_adapters: dict[str, tuple[float, VerifiedModel]] = {}  # reference -> (until, adapter)
        context = ray.get_runtime_context()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.actor_name = context.get_actor_name()
        self.resources = context.get_assigned_resources()
        self.loaded = await asyncio.to_thread(self._load)
        self.monitor = PromptMonitor(tier, cfg.drift_window)
        self.quality = QualityMonitor(tier, cfg.quality_probe) if cfg.quality_probe else None
        self._probes: set[asyncio.Task] = set()  # probes running after their request was answered
        self.follow_failures = FollowFailures(cfg.alias_poll_s)
        loop = asyncio.get_running_loop()
        self._reporter = loop.create_task(self._report_forever())
        self._follower = loop.create_task(self._follow_forever()) if following(cfg.model) else None

    def _load(self) -> LoadedModel:
        """Resolve, verify and load the tier's model, and time one warm-up clip on the sampler thread (off the event
        loop: a replica following an alias keeps serving the old model meanwhile)."""
        # Imported here: the driver imports this module to build the app, and needs no model code.
        from vidgen.pipelines.load import load_pipeline
        from vidgen.pipelines.references import verify_model
        from vidgen.text import TextEncoder

        cfg = self.cfg
        model = verify_model(cfg.model)
        pipeline = load_pipeline(model, TextEncoder(cache_entries=cfg.text_cache_entries, dtype=cfg.text_dtype),
                                 device=self.device, int8=cfg.int8, options=cfg.pipeline)
        caps = cfg.applied_to(pipeline.capabilities)
        serves = ServedModel(model=cfg.model, label=pipeline.label, folder=pipeline.folder.name,
                             backend=pipeline.backend, pipeline_class=pipeline.pipeline_class, int8=cfg.int8,
                             max_batch_size=cfg.max_batch_size)
        drift = None
        if cfg.prompt_drift and pipeline.backend == "vidgen":  # its reference set: the built-in world's captions
            from vidgen.pipelines.drift_reference import cached_world_drift
            from vidgen.pipelines.references import model_digest

            drift = cached_world_drift(model_digest(model.sums), pipeline.encoder, *caps.shape)
        loaded = LoadedModel(pipeline, caps, serves, 0.0, drift, self._adapter_slots(model, pipeline))
        loaded.seconds_per_work = self.sampler_thread.submit(self._warm_up, loaded).result()
        return loaded

    def _warm_up(self, loaded: LoadedModel) -> float:
        """On the sampler thread: sample one clip of one step and encode its outputs (what pays the first call's
        costs, PyAV's and PIL's imports among them; the tier's full steps cost the cloud tier ~0.8 s more and teach
        nothing a step does not), and return its seconds per unit of work, the estimate the first renders refine."""
        clip, _ = resolve_clip(ClipRequest(prompt="a red square moving right", steps=1), loaded.capabilities)
        made, seconds = self._sample([RenderJob(clip)], loaded)
        clip_outputs(made[0])
        return seconds / clip_work(*loaded.capabilities.shape, clip.steps)

    def _adapter_slots(self, model: VerifiedModel, pipeline) -> AdapterSlots | None:
        """Where the tier's `loras` load, on a diffusers model; None when it serves none."""
        if not self.cfg.loras:
            return None
        if pipeline.backend != "diffusers":
            raise ValueError(f"loras: adapters apply to diffusers models; {pipeline.label} is a {pipeline.backend} "
                             "model: remove loras from this tier")
        if not hasattr(pipeline.pipe, "set_adapters"):
            raise ValueError(f"loras: {pipeline.pipeline_class} loads no LoRA adapters in diffusers: remove loras "
                             "from this tier")
        from vidgen.pipelines.adapters import AdapterSlots
        from vidgen.pipelines.references import model_digest

        return AdapterSlots(pipeline.pipe, model.label, model_digest(model.sums), self.cfg.max_loras)

    def _verified_adapter(self, requested: str, loaded: LoadedModel) -> VerifiedModel:
        """The adapter a request's `lora` names, verified and checked against the loaded base (kept for
        `alias_poll_s`, so an alias moved is followed); AdapterRefused with the reason. Blocking: off the loop."""
        from vidgen.pipelines.adapters import check_base_digest
        from vidgen.pipelines.references import verify_model

        reference = self.cfg.adapter_reference(requested)
        if reference is None or loaded.adapters is None:
            serves = ", ".join(sorted(self.cfg.loras)) or "none"
            raise AdapterRefused(f"{requested!r} is not an adapter the {self.tier} tier serves (it serves: {serves})")
        until, adapter = self.verified_adapters.get(reference, (0.0, None))
        try:
            if adapter is None or until < time.monotonic():
                adapter = verify_model(reference)
                self.verified_adapters[reference] = (time.monotonic() + self.cfg.alias_poll_s, adapter)
            check_base_digest(adapter, loaded.adapters.base_label, loaded.adapters.base_digest)
        except (OSError, ValueError) as exc:  # ModelFileError and StorageError are both
            raise AdapterRefused(str(exc)) from exc
        return adapter

    async def _follow_forever(self) -> None:
        """Poll the alias (or `latest`) the tier's model names; when it names another version, load that one beside
        the current model and swap between batches: requests in flight finish on the model they started on. A
        version that fails to load is tried again after a doubling wait (`FollowFailures`), and reported."""
        while True:
            await asyncio.sleep(self.cfg.alias_poll_s)
            try:
                version = await asyncio.to_thread(resolved_version, self.cfg.model)
            except Exception as exc:  # a registry hiccup must not take the replica down; the next poll retries
                log.warning("following %s failed: %s", self.cfg.model, exc)
                continue
            if version == label_version(self.loaded.pipeline.label):
                self.follow_failures.loaded()  # the alias came back to the model served: nothing is failing
            elif self.follow_failures.should_load(version, time.monotonic()):
                await self._swap_to(version)

    async def _swap_to(self, version: str) -> None:
        started = time.perf_counter()
        try:
            replacement = await asyncio.to_thread(self._load)
        except Exception as exc:  # a broken version must not take the replica down: it keeps serving the old one
            wait = self.follow_failures.failed(version, f"{type(exc).__name__}: {exc}", time.monotonic())
            log.error("%s names %s, which failed to load (%s); still serving %s, trying again in %.0f s",
                      self.cfg.model, version, exc, self.loaded.pipeline.label, wait)
            return
        self.follow_failures.loaded()
        old, self.loaded = self.loaded.pipeline.label, replacement
        if self.quality is not None:
            self.quality.reset()  # a new model: its own window
        log.info("%s now serves %s (was %s), loaded in %.1f s", self.cfg.model, replacement.pipeline.label, old,
                 time.perf_counter() - started)

    async def _on_sampler_thread(self, jobs: list[RenderJob], loaded: LoadedModel):
        return await asyncio.get_running_loop().run_in_executor(self.sampler_thread, self._sample, jobs, loaded)

    def _count_step(self) -> None:
        self.steps_sampled += 1

    def _sample(self, jobs: list[RenderJob], loaded: LoadedModel):
        """On the sampler thread: (each job's frames, or the PromptRejected of a prompt the encoder refuses, or
        Cancelled; seconds the sampler took per clip, as the pipeline measured it). The clips share their settings;
        the sampler stops early when every job still to sample is cancelled."""
        text, refused = loaded.pipeline.encode([job.clip.prompt for job in jobs])
        good = [job for i, job in enumerate(jobs) if i not in refused]
        if not good or all(job.cancelled.is_set() for job in good):
            return [PromptRejected(refused[i]) if i in refused else Cancelled() for i in range(len(jobs))], 0.0
        if loaded.adapters is not None:  # the jobs share their adapter (`RenderJob.sampler_group`)
            loaded.adapters.activate(jobs[0].adapter)
        try:
            generated = loaded.pipeline.generate([job.clip for job in good], text,
                                                 progress=sampler_progress(good, self._count_step))
        except SamplingCancelled as stopped:
            log.info("sampling stopped after %d of %d steps: every request of the call was cancelled", stopped.step,
                     good[0].clip.steps)
            return [PromptRejected(refused[i]) if i in refused else Cancelled() for i in range(len(jobs))], 0.0
        made = iter(generated.frames)
        out = [PromptRejected(refused[i]) if i in refused else next(made) for i in range(len(jobs))]
        out = [Cancelled() if job.cancelled.is_set() and not isinstance(o, PromptRejected) else o
               for job, o in zip(jobs, out, strict=True)]
        return out, generated.timings["sample_s"] / len(good)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _render_batch(self, jobs: list[RenderJob]) -> list:
        """Requests that arrived together (those cancelled before the batch began are left out by Serve): those
        sharing their settings sampled in one call, one group after another, all on the model loaded when the batch
        began; per job, (frames, seconds per clip of its group, the model), its PromptRejected or Cancelled."""
        self.largest_batch = max(self.largest_batch, len(jobs))
        loaded = self.loaded
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault(job.sampler_group, []).append(i)
        results: list = [None] * len(jobs)
        for indices in groups.values():
            made, seconds = await self._on_sampler_thread([jobs[i] for i in indices], loaded)
            for i, frames in zip(indices, made, strict=True):
                results[i] = frames if isinstance(frames, PromptRejected | Cancelled) else (frames, seconds, loaded)
        return results

    def _start_probe(self, prompt: str, loaded: LoadedModel) -> None:
        """Probe one in `every` served prompts, after its request is answered (the caller's clip is not touched); at
        most one probe at a time, so probes (which share the sampler thread with requests) cannot pile up."""
        if self.quality.due() and not self._probes:
            task = asyncio.get_running_loop().create_task(self._probe(prompt, loaded))
            self._probes.add(task)
            task.add_done_callback(self._probe_done)

    def _probe_done(self, task: asyncio.Task) -> None:
        self._probes.discard(task)
        if not task.cancelled() and task.exception() is not None:  # a probe must not fail a request nor pass silently
            log.warning("quality probe of %s failed: %s", self.cfg.model, task.exception())

    async def _probe(self, prompt: str, loaded: LoadedModel) -> None:
        """Render the probe's own clip of a served prompt (`probe_clip`: the tier's settings, the probe seed) and
        score it (`QualityMonitor.score`); roll the alias back if the rolling quality regressed."""
        made, _ = await self._on_sampler_thread([RenderJob(probe_clip(prompt, loaded.capabilities))], loaded)
        if isinstance(made[0], PromptRejected):
            return
        self.quality.score(prompt, made[0], loaded.pipeline.backend)
        if self.quality.regressed() and following(self.cfg.model) and self.cfg.quality_probe.rollback:
            probe = self.cfg.quality_probe
            reason = (f"rolling prompt accuracy {self.quality.quality():.2f} < {probe.min_quality} over the last "
                      f"{len(self.quality.recent)} probes of {loaded.pipeline.label}")
            moved = await asyncio.to_thread(roll_back_alias, self.cfg.model, loaded.pipeline.label, reason,
                                            f"vidgen serving: tier {self.tier}, replica {self.replica}",
                                            probe.min_rollback_interval_s)
            self.quality.reset()
            if moved:
                self.quality.rollbacks.inc(tags={"tier": self.tier})
                log.warning("%s rolled back to %s: %s", self.cfg.model, moved, reason)

    def _report(self) -> TierReport:
        loaded = self.loaded
        return TierReport(tier=self.tier, replica=self.replica, actor_name=self.actor_name,
                          resources=self.resources, held=self.held, rendered=self.rendered,
                          largest_batch=self.largest_batch, steps_sampled=self.steps_sampled,
                          seconds_per_work=loaded.seconds_per_work,
                          serves=loaded.serves, capabilities=loaded.capabilities,
                          prompt_ood_share=self.monitor.share(),
                          quality=self.quality.quality() if self.quality else None,
                          temporal_consistency=self.quality.consistency() if self.quality else None,
                          follow_error=self.follow_failures.report())

    async def _report_forever(self) -> None:
        while True:
            try:
                await self.board.report.remote(self._report())
            except Exception as exc:  # the board restarting must not take the replica down; the next report heals
                log.warning("report to the tier board failed: %s", exc)
            await asyncio.sleep(self.report_every_s)

    async def render(self, request: ClipRequest, stills: bool = True) -> dict:
        """`render_stream`'s result alone."""
        result = None
        async for event in self.render_stream(request, stills):
            result = event
        return result

    async def render_stream(self, request: ClipRequest, stills: bool = True):
        """Render the clip `request` asks for (the router's VideoRequest, checked against this model already: only
        its ClipRequest fields count here). Yields `{"step": i, "steps": n}` after each sampler step, then the result:
        the MP4's bytes, with `stills` its thumbnail and spritesheet (JPEGs: what an asynchronous render keeps; the
        synchronous route answers the MP4 alone, sparing ~0.8 ms of an edge clip's ~30), and facts; or `rejected`
        with the reason when the model cannot make it or the prompt cannot be encoded. Cancelling the call (the
        caller gone, or its render deleted) cancels the job: it never reaches the sampler if still queued, and stops
        the sampler at its next step if it is alone there."""
        loaded = self.loaded
        clip, problems = resolve_clip(request, loaded.capabilities)
        if problems:
            yield {"rejected": "; ".join(f"{p.field}: {p.reason}" for p in problems), "tier": self.tier,
                   "replica": self.replica}
            return
        adapter, requested = None, getattr(request, "lora", None)
        if requested is not None:
            try:
                adapter = await asyncio.to_thread(self._verified_adapter, requested, loaded)
            except AdapterRefused as exc:
                yield {"rejected": str(exc), "param": "lora", "code": "adapter_refused", "tier": self.tier,
                       "replica": self.replica}
                return
        if loaded.drift is not None:
            text, refused = loaded.pipeline.encode([clip.prompt])  # cached: the sampler reuses it
            if not refused:
                self.monitor.observe(float(loaded.drift.score(text.pooled)[0]), loaded.drift.threshold)
        loop, steps = asyncio.get_running_loop(), asyncio.Queue()
        job = RenderJob(clip, on_step=lambda step: loop.call_soon_threadsafe(steps.put_nowait, step),
                        adapter=adapter)
        self.held += 1
        batch = asyncio.ensure_future(self._render_batch(job))
        try:
            while not batch.done() or not steps.empty():
                step = asyncio.ensure_future(steps.get())
                await asyncio.wait({batch, step}, return_when=asyncio.FIRST_COMPLETED)
                if step.done():
                    yield {"step": step.result(), "steps": clip.steps}
                else:
                    step.cancel()
            made = batch.result()
            if isinstance(made, PromptRejected):
                yield {"rejected": str(made), "tier": self.tier, "replica": self.replica}
                return
            frames, seconds, loaded = made
            mp4, jpeg, sprites = await asyncio.to_thread(clip_outputs, frames, stills)
        finally:
            self.held -= 1
            if not batch.done():  # the caller cancelled: leave the batch, stop the sampler if alone in its call
                job.cancelled.set()
                batch.cancel()
        work = clip_work(clip.frames, clip.height, clip.width, clip.steps)
        loaded.seconds_per_work += EMA_WEIGHT * (seconds / work - loaded.seconds_per_work)
        self.rendered += 1
        if self.quality is not None:
            self._start_probe(clip.prompt, loaded)
        label = loaded.pipeline.label if adapter is None else f"{loaded.pipeline.label}+{adapter.label}"
        yield {"mp4": mp4, "jpeg": jpeg, "spritesheet": sprites, "tier": self.tier, "replica": self.replica,
               "model": label, "steps": clip.steps, "guidance": clip.guidance, "sample_s": seconds}
