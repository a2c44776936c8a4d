"""A tier's replica: one model loaded once, sampling one request at a time, reporting its state to the board.

The sampler is not safe to run concurrently (and on a CPU two at once only share the cores), so renders run one
at a time on one sampler thread; the requests waiting for it are held here (up to `max_ongoing_requests`), where the
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
        from vidgen.checkpoint import load_model
        from vidgen.pipelines import resolve_model, sampler_for
        from vidgen.text import TextEncoder

        cfg = TierConfig.model_validate(tier_config)
        torch.set_num_threads(cfg.torch_threads)
        self.sampler_thread = ThreadPoolExecutor(1, thread_name_prefix="sampler", initializer=torch.set_num_threads,
                                                 initargs=(cfg.torch_threads,))
        self.tier, self.board, self.report_every_s = tier, board, report_every_s
        self.folder = resolve_model(cfg.model)
        model = load_model(self.folder)
        if cfg.int8:
            from vidgen.quantize import quantize_int8

            model = quantize_int8(model)
        self.device = torch.device("cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        sampler = sampler_for(self.folder, cfg.steps, cfg.guidance)
        self.steps, self.guidance = sampler.steps, sampler.guidance
        # What this replica serves, reported with its state (GET /v1/models, the request shape check).
        self.serves = {"model": cfg.model, "folder": self.folder.name, "int8": cfg.int8, "steps": self.steps,
                       "guidance": self.guidance, "frames": model.config.frames, "height": model.config.height,
                       "width": model.config.width, "device": self.device.type}
        self.encoder = TextEncoder()
        self.held = 0
        self.rendered = 0
        context = ray.get_runtime_context()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.actor_name = context.get_actor_name()
        self.resources = context.get_assigned_resources()
        _, seconds = await self._on_sampler_thread("a red square moving right", 0, self.steps, self.guidance)  # warm-up
        self.seconds_per_step = seconds / self.steps
        self._reporter = asyncio.get_running_loop().create_task(self._report_forever())

    async def _on_sampler_thread(self, *args):
        return await asyncio.get_running_loop().run_in_executor(self.sampler_thread, self._sample, *args)

    def _sample(self, prompt: str, seed: int, steps: int, guidance: float):
        """On the sampler thread: (the clip, seconds spent sampling it), not counting the wait for the thread."""
        from vidgen.diffusion import sample
        from vidgen.training import autocast_dtype

        dtype = autocast_dtype("auto") if self.device.type == "cpu" else torch.bfloat16
        started = time.perf_counter()
        with torch.inference_mode():
            try:
                text = self.encoder.encode([prompt])
            except ValueError as exc:
                raise PromptRejected(str(exc)) from None
            clip = sample(self.model, text, [seed], steps, guidance, dtype).frames[0]
        return clip, time.perf_counter() - started

    def _report(self) -> dict:
        return {"tier": self.tier, "replica": self.replica, "actor_name": self.actor_name,
                "resources": self.resources, "held": self.held, "rendered": self.rendered,
                "seconds_per_step": self.seconds_per_step, "default_steps": self.steps, "serves": self.serves}

    async def _report_forever(self) -> None:
        while True:
            try:
                await self.board.report.remote(self._report())
            except Exception as exc:  # the board restarting must not take the replica down; the next report heals
                log.warning("report to the tier board failed: %s", exc)
            await asyncio.sleep(self.report_every_s)

    async def render(self, request: dict) -> dict:
        """Render one clip: `request` has prompt, seed and optional steps/guidance; returns MP4 bytes and facts,
        or `rejected` with the reason when the prompt cannot be encoded."""
        from storage.video import encode

        steps = request.get("steps") or self.steps
        guidance = request.get("guidance") or self.guidance
        self.held += 1
        try:
            clip, seconds = await self._on_sampler_thread(request["prompt"], request["seed"], steps, guidance)
            mp4 = await asyncio.to_thread(encode, clip)
        except PromptRejected as exc:
            return {"rejected": str(exc), "tier": self.tier, "replica": self.replica}
        finally:
            self.held -= 1
        self.seconds_per_step += EMA_WEIGHT * (seconds / steps - self.seconds_per_step)
        self.rendered += 1
        return {"mp4": mp4, "tier": self.tier, "replica": self.replica, "steps": steps, "guidance": guidance,
                "sample_s": seconds}



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
