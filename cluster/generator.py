"""A tier's replica: one model loaded once, sampling batches of requests, reporting its state to the board.

The sampler is not safe to run concurrently (and on a CPU two at once only share the cores), so renders run one
batch at a time on one sampler thread. Requests that arrive together are batched by Ray Serve (`@serve.batch`, up
to the tier's `max_batch_size`, waiting at most `batch_wait_timeout_s` for more): those sharing their shape and
settings are sampled in one call. The requests waiting are held here (up to `max_ongoing_requests`), where the
replica can count them. Every `report_every_s` the replica tells the `TierBoard` how many requests it holds and its
measured seconds per step: that, not a guess, is what the placement policy reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import ray
import torch
from ray import serve

from vidgen.clip_request import ClipRequest, ResolvedClip, resolve_clip

log = logging.getLogger(__name__)

# Weight of the newest render in the running estimate of seconds per step.
EMA_WEIGHT = 0.3


class PromptRejected(ValueError):
    """The text encoder refused the prompt (e.g. too many tokens): the caller's fault, answered with 422."""


class Generator:
    """Deployed twice, as EdgeGenerator and CloudGenerator, with the tier's config."""

    async def __init__(self, tier: str, tier_config: dict, board, report_every_s: float):
        # Imported here: the driver and the router import this module to build the app, and need no model code.
        from cluster.serve_config import TierConfig
        from vidgen.runtime.pipeline import VideoPipeline
        from vidgen.text import TextEncoder

        cfg = TierConfig.model_validate(tier_config)
        torch.set_num_threads(cfg.torch_threads)
        self.sampler_thread = ThreadPoolExecutor(1, thread_name_prefix="sampler", initializer=torch.set_num_threads,
                                                 initargs=(cfg.torch_threads,))
        self.tier, self.board, self.report_every_s = tier, board, report_every_s
        device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.pipeline = VideoPipeline.from_reference(cfg.model, TextEncoder(cache_entries=cfg.text_cache_entries),
                                                     device=device, int8=cfg.int8, options=cfg.pipeline)
        self.capabilities = self.pipeline.capabilities.with_defaults(cfg.steps, cfg.guidance, cfg.frames,
                                                                     cfg.height, cfg.width)
        caps = self.capabilities
        self._render_batch.set_max_batch_size(cfg.max_batch_size)
        self._render_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        # What this replica serves, reported with its state (GET /v1/models, the router's request checks).
        frames, height, width = caps.shape
        self.serves = {"model": cfg.model, "label": self.pipeline.label, "folder": self.pipeline.folder.name,
                       "backend": self.pipeline.backend, "pipeline_class": self.pipeline.pipeline_class,
                       "int8": cfg.int8, "steps": caps.steps, "guidance": caps.guidance, "frames": frames,
                       "height": height, "width": width, "device": device, "max_batch_size": cfg.max_batch_size,
                       "capabilities": caps.model_dump()}
        self.held = 0
        self.rendered = 0
        self.largest_batch = 0
        context = ray.get_runtime_context()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.actor_name = context.get_actor_name()
        self.resources = context.get_assigned_resources()
        warm_up, _ = resolve_clip(ClipRequest(prompt="a red square moving right"), caps)
        _, seconds = await self._on_sampler_thread([warm_up])
        self.seconds_per_step = seconds / caps.steps
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    async def _on_sampler_thread(self, clips: list[ResolvedClip]):
        return await asyncio.get_running_loop().run_in_executor(self.sampler_thread, self._sample, clips)

    def _sample(self, clips: list[ResolvedClip]):
        """On the sampler thread: (each clip's frames, or the PromptRejected of a prompt the encoder refuses; seconds
        spent sampling per clip), not counting the wait for the thread. The clips share their settings."""
        started = time.perf_counter()
        text, refused = self.pipeline.encode([c.prompt for c in clips])
        good = [c for i, c in enumerate(clips) if i not in refused]
        made = iter(self.pipeline.generate(good, text).frames if good else [])
        out = [PromptRejected(refused[i]) if i in refused else next(made) for i in range(len(clips))]
        return out, (time.perf_counter() - started) / max(len(good), 1)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def _render_batch(self, clips: list[ResolvedClip]) -> list:
        """Clips that arrived together: those sharing their settings sampled in one call, one group after another;
        per clip, (frames, seconds per clip of its group) or its PromptRejected."""
        self.largest_batch = max(self.largest_batch, len(clips))
        groups: dict[tuple, list[int]] = {}
        for i, clip in enumerate(clips):
            groups.setdefault(clip.settings, []).append(i)
        results: list = [None] * len(clips)
        for indices in groups.values():
            made, seconds = await self._on_sampler_thread([clips[i] for i in indices])
            for i, frames in zip(indices, made, strict=True):
                results[i] = frames if isinstance(frames, PromptRejected) else (frames, seconds)
        return results

    def _report(self) -> dict:
        return {"tier": self.tier, "replica": self.replica, "actor_name": self.actor_name,
                "resources": self.resources, "held": self.held, "rendered": self.rendered,
                "largest_batch": self.largest_batch,
                "seconds_per_step": self.seconds_per_step, "default_steps": self.capabilities.steps,
                "serves": self.serves}

    async def _report_forever(self) -> None:
        while True:
            try:
                await self.board.report.remote(self._report())
            except Exception as exc:  # the board restarting must not take the replica down; the next report heals
                log.warning("report to the tier board failed: %s", exc)
            await asyncio.sleep(self.report_every_s)

    async def render(self, request: dict) -> dict:
        """Render one clip: `request` holds ClipRequest fields (the router checked them against this model); returns
        MP4 bytes and facts, or `rejected` with the reason when the prompt cannot be encoded."""
        from storage.video import encode

        clip, problems = resolve_clip(ClipRequest.model_validate(request), self.capabilities)
        if problems:
            return {"rejected": "; ".join(f"{p.field}: {p.reason}" for p in problems), "tier": self.tier,
                    "replica": self.replica}
        self.held += 1
        try:
            made = await self._render_batch(clip)
            if isinstance(made, PromptRejected):
                return {"rejected": str(made), "tier": self.tier, "replica": self.replica}
            frames, seconds = made
            mp4 = await asyncio.to_thread(encode, frames)
        finally:
            self.held -= 1
        self.seconds_per_step += EMA_WEIGHT * (seconds / clip.steps - self.seconds_per_step)
        self.rendered += 1
        return {"mp4": mp4, "tier": self.tier, "replica": self.replica, "model": self.pipeline.label,
                "steps": clip.steps, "guidance": clip.guidance, "sample_s": seconds}


class TierBoard:
    """Collects the replicas' reports; the router reads a snapshot of the fresh ones."""

    def __init__(self, stale_after_s: float):
        self.stale_after_s = stale_after_s
        self.reports: dict[str, dict] = {}

    def report(self, report: dict) -> None:
        self.reports[report["replica"]] = {**report, "seen": time.monotonic()}

    def snapshot(self) -> list[dict]:
        now = time.monotonic()
        self.reports = {k: r for k, r in self.reports.items() if now - r["seen"] <= self.stale_after_s}
        return list(self.reports.values())
