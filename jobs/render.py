"""Bulk render: every row of a manifest becomes one MP4, rendered by a pool of Ray actors that load the model once.

What OUT holds, and how two runs on one OUT share it, is `storage.render_ledger`: a claim per row in flight, a video
and a record per rendered row (results.jsonl and errors.jsonl rebuilt at the end of each run), run.json. With
`trajectory_steps` (vidgen models) OUT/trajectories/<id>.npz keeps the sampler's states before those steps and the
final latents (distillation's teacher data).

Run again on the same OUT, it renders only rows not done for this run's request, so a killed run loses at most the
batches in flight. A row is done only when its record names the same request: the model's label (its weights
digest included) and every resolved setting, as a claim does. A row whose record another model or other settings
made (or an older vidgen, whose records name no request) is rendered again and its video and record replaced, so
results.jsonl and run.json (`rendered_now`, `already_done`) only ever describe this run's model; two runs of
different models on one OUT at the same time are not supported (each row ends as the last run to finish it left it).
A row whose claim is older than `claim_timeout_s` belongs to a run that died: the next run takes it over, and
a video that run left without a record is this row's if the claim names the same request (model and settings),
whatever bytes a re-render would make. Rows are validated first (`vidgen.manifest`), then grouped by
sampler settings into batches of `batch_size`; one bad prompt fails its row, not its batch.

Run it:
    vidgen render examples/manifest.jsonl --out out/demo                # starts a local Ray
    python -m jobs.render --config render.yaml [--address auto]          # a RenderConfig as YAML
    ray job submit --working-dir . -- python -m jobs.render --config render.yaml --address auto
"""

from __future__ import annotations

import datetime
import io
import json
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from pydantic import ConfigDict, Field

from jobs._entrypoint import job_arguments
from jobs.connection import connect_ray
from jobs.render_report import write_report
from storage.objectstore import ObjectStore, S3Config
from storage.package import sha256_bytes
from storage.render_ledger import ClaimState, RenderLedger, RenderRecord, RowClaims
from vidgen.clip_request import (
    DEFAULT_MAX_STEPS,
    Capabilities,
    ClipDefaults,
    ResolvedClip,
    Steps,
    limit_problems,
    resolve_clip,
)
from vidgen.manifest import RowError, derive_seed, manifest_format, output_key, parse_manifest
from vidgen.pipelines.load import describe_model
from vidgen.pipelines.options import PipelineOptions

log = logging.getLogger(__name__)
CLAIMED_ELSEWHERE = "claimed by another run"
PREVIEW_CLIPS = 8


class RenderConfig(ClipDefaults):
    """What to render, with which model, where to, and how wide; the defaults of rows that leave a setting out
    (`ClipDefaults`: steps, guidance, frames, height, width)."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="JSONL or CSV file: a local path, file:///… or s3://…")
    model: str | None = Field(None, description="model folder (a vidgen package or a diffusers pipeline folder), "
                                                "shipped model name or registry reference (default: the shipped "
                                                "demo model)")
    out: str = Field("out/render", description="output folder or s3://BUCKET/PREFIX")
    seed: int = Field(0, description="run seed: rows without a seed get one derived from (seed, id)")
    max_steps: Steps = Field(DEFAULT_MAX_STEPS, description="rows asking for more sampler steps are refused (steps "
                                                            "are what a row's cost grows with)")
    batch_size: int = Field(8, ge=1, le=256, description="clips sampled together by one actor")
    # 2 single-threaded actors beat 1 two-threaded one on 2 cores (benchmarks/render.py: 1.3x steady state)
    actors: int = Field(2, ge=1, description="sampling actors, each holding the model once")
    cpus_per_actor: int = Field(1, ge=1, description="CPUs Ray reserves per actor; also its torch threads")
    gpus_per_actor: float = Field(0, ge=0, description="GPUs Ray reserves per actor (Ray `num_gpus`; 1: one model "
                                                       "per GPU); above 0 the actors sample on their GPU")
    pipeline: PipelineOptions = Field(default_factory=PipelineOptions,
                                      description="dtype and the memory switches of diffusers pipelines")
    preview: bool = Field(False, description="also write preview.png, a contact sheet of the first clips rendered")
    report: bool = Field(False, description="also write report.html: every rendered row's video, prompt and "
                                            "settings, and the rows not rendered with why (jobs/render_report.py)")
    trajectory_steps: list[int] = Field(default_factory=list, description="sampler steps whose input states to keep "
                                        "with the final latents, in OUT/trajectories/<id>.npz (vidgen models; the "
                                        "teacher data of `vidgen distill`)")
    claim_timeout_s: float = Field(3600, gt=0, description="a row another run claimed this long ago and has not "
                                                           "finished is taken over (that run died); longer than a "
                                                           "batch takes to render")
    s3: S3Config = Field(default_factory=S3Config)


@dataclass(frozen=True)
class PlannedClip:
    """A manifest row ready for an actor: where it came from, where it goes, and exactly what to sample."""

    line: int
    id: str
    key: str
    clip: ResolvedClip
    request: str = ""  # digest of the model and the resolved clip: what a claim, a left-over video, a record belong to
    preview: bool = False
    replaces: bool = False  # the row has a record of another request: its video and record are replaced

    @classmethod
    def from_dict(cls, data: dict) -> PlannedClip:
        return cls(**{**data, "clip": ResolvedClip(**data["clip"])})


def plan_batches(rows: list, caps: Capabilities, cfg: RenderConfig, label: str = "",
                 done: Mapping[str, str | None] | None = None) -> tuple[list[list[PlannedClip]], list[RowError]]:
    """Resolve each row against the model (the run's steps and guidance as defaults), leave out the rows `done`
    ({id: request of its record}) says are done for this very request, then batch rows that share their sampler
    settings; the first clips are marked for the preview."""
    done = done or {}
    caps = cfg.applied_to(caps)
    groups: dict[tuple, list[PlannedClip]] = {}
    errors = []
    for item in rows:
        clip, problems = resolve_clip(item.row, caps, derive_seed(cfg.seed, item.row.id))
        if clip is not None and (limited := limit_problems(clip.prompt, clip.steps, cfg.max_steps)):
            clip, problems = None, limited
        errors += [RowError(item.line, item.row.id, p.field, p.reason) for p in problems]
        if clip is not None:
            # a cached render is not the uncached one: the cache settings join the request (only when set, so
            # uncached requests keep their digests)
            cache = [cfg.pipeline.cache.model_dump()] if cfg.pipeline.cache else []
            request = sha256_bytes(json.dumps([label, asdict(clip), *cache], sort_keys=True).encode())
            if item.row.id in done and done[item.row.id] == request:
                continue
            planned = PlannedClip(item.line, item.row.id, output_key(item.row), clip, request,
                                  replaces=item.row.id in done)
            groups.setdefault(clip.settings, []).append(planned)
    batches = [clips[i:i + cfg.batch_size] for _, clips in sorted(groups.items())
               for i in range(0, len(clips), cfg.batch_size)]
    if cfg.preview:
        marked = 0
        for b, batch in enumerate(batches):
            take = min(len(batch), PREVIEW_CLIPS - marked)
            batches[b] = [replace(c, preview=i < take) for i, c in enumerate(batch)]
            marked += take
    return batches, errors


class Renderer:
    """A Ray Data actor: loads the pipeline once, then samples, encodes and writes batches of planned clips.

    Each batch arrives as one row whose `clips` column holds its PlannedClips (as Arrow structs); the answer is a
    table of one result per clip.
    """

    def __init__(self, model_ref: str | None, label: str, out: str, s3: dict, threads: int, run_id: str,
                 claim_timeout_s: float, gpus: float = 0, options: dict | None = None,
                 trajectory_steps: tuple[int, ...] = ()):
        import torch

        from vidgen.pipelines.load import load_pipeline
        from vidgen.threads import use_torch_threads

        use_torch_threads(None, threads)
        device = "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"
        self.pipeline = load_pipeline(model_ref, device=device, options=PipelineOptions(**(options or {})))
        if self.pipeline.label != label:
            raise RuntimeError(f"this node's copy of {model_ref} is {self.pipeline.label}, the driver's {label}")
        self.ledger = RenderLedger(ObjectStore(S3Config(**s3)), out)
        self.claims = RowClaims(self.ledger, run_id, claim_timeout_s)
        self.label = label
        self.trajectory_steps = tuple(trajectory_steps)

    def _write(self, planned: PlannedClip, data: bytes, claim: ClaimState) -> str | None:
        """Put the encoded video; its sha256, or None when another video holds its key (a seam for tests that
        kill an actor between a video and its record)."""
        return self.ledger.put_video(planned.key, data, claim, replaces=planned.replaces)

    def __call__(self, batch):
        import pyarrow as pa

        from storage.video import encode

        planned = [PlannedClip.from_dict(d) for d in batch.column("clips")[0].as_py()]
        claims = {p.id: self.claims.take(p.id, p.request) for p in planned}
        for n, p in enumerate(planned):  # another run may have rendered a row since this run planned it
            if claims[p.id] is ClaimState.HELD or not self.ledger.is_done(p.id):
                continue
            if self.ledger.record_request(p.id) == p.request:  # done for this very request
                self.claims.release(p.id)
                claims[p.id] = ClaimState.HELD
            else:
                planned[n] = replace(p, replaces=True)
        results = [_result(p, False, "id", CLAIMED_ELSEWHERE) for p in planned if claims[p.id] is ClaimState.HELD]
        planned = [p for p in planned if claims[p.id] is not ClaimState.HELD]
        text, refused = self.pipeline.encode([p.clip.prompt for p in planned])
        for i, p in enumerate(planned):
            if i in refused:
                results.append(_result(p, False, "prompt", refused[i]))
                self.claims.release(p.id)
        good = [p for i, p in enumerate(planned) if i not in refused]
        if good:
            try:
                out = self.pipeline.generate([p.clip for p in good], text, keep_steps=self.trajectory_steps)
            except Exception as exc:  # a model failing on these settings fails their rows, not the run
                log.exception("sampling %d clips failed", len(good))
                for p in good:
                    self.claims.release(p.id)
                reason = f"the model failed on these settings ({type(exc).__name__}: {str(exc)[:300]})"
                return pa.Table.from_pylist(results + [_result(p, False, None, reason) for p in good])
            seconds = out.timings["sample_s"] / len(good)
            for n, (p, frames) in enumerate(zip(good, out.frames, strict=True)):
                if not self.claims.holds(p.id):  # taken over while it sampled (too slow)
                    results.append(_result(p, False, "id", CLAIMED_ELSEWHERE))
                    continue
                if self.trajectory_steps:
                    self.ledger.put_trajectory(p.id, _trajectory_npz(out, n))
                digest = self._write(p, encode(frames, "mp4"), claims[p.id])
                if digest is None:
                    self.claims.release(p.id)
                    results.append(_result(p, False, None, f"{self.ledger.out.join(p.key).uri} exists with other "
                                                           "content; move it away to render this row"))
                    continue
                self.ledger.put_record(RenderRecord(p.id, p.key, digest, round(seconds, 4), self.label,
                                                    {**asdict(p.clip), **_cached_steps(out, n)}, p.request))
                self.claims.release(p.id)
                results.append(_result(p, True, frames=frames.tobytes() if p.preview else None))
        return pa.Table.from_pylist(results)


def _cached_steps(out, n: int) -> dict:
    """What clip n's record says of step caching: its steps in full and skipped (nothing when caching was off)."""
    if out.cached_steps is None:
        return {}
    return {"steps_full": out.cached_steps[n]["full"], "steps_skipped": out.cached_steps[n]["skipped"]}


def _trajectory_npz(out, n: int) -> bytes:
    """Clip n's trajectory as .npz bytes (numeric arrays only: read back with allow_pickle=False): `steps`, the
    `states` before them (S, C, T, h, w) and the final latents `x0` (C, T, h, w), float32."""
    steps = sorted(out.states)
    buffer = io.BytesIO()
    np.savez(buffer, steps=np.asarray(steps, np.int64),
             states=np.stack([out.states[s][n].float().cpu().numpy() for s in steps]),
             x0=out.x0[n].float().cpu().numpy())
    return buffer.getvalue()


def _result(p: PlannedClip, ok: bool, field: str | None = None, reason: str | None = None,
            frames: bytes | None = None) -> dict:
    return {"line": p.line, "id": p.id, "prompt": p.clip.prompt, "ok": ok, "field": field, "reason": reason,
            "frames": frames, "shape": [p.clip.frames, p.clip.height, p.clip.width]}


def render(cfg: RenderConfig, address: str | None = None,
           on_batch: Callable[[list[dict], int], None] | None = None, renderer: type = Renderer,
           actor_options: dict | None = None) -> dict:
    """Render every good row not yet done; returns counts and where things went. `on_batch(results, rows_left)`.

    `renderer` and `actor_options` (Ray actor options such as `max_restarts`) are seams for tests that make an
    actor fail; nothing in a RenderConfig does that.
    """
    import ray

    started = _now_iso()
    store = ObjectStore(cfg.s3)
    ledger = RenderLedger(store, cfg.out)
    manifest_bytes = store.read(cfg.manifest)
    rows, errors = parse_manifest(manifest_bytes, manifest_format(str(cfg.manifest)))
    total_rows = len(rows) + len({e.line for e in errors})
    info = describe_model(cfg.model, cfg.pipeline)
    label = info.label
    if cfg.trajectory_steps and info.backend != "vidgen":
        raise ValueError(f"trajectory_steps: {info.pipeline_class} is a {info.backend} model; only vidgen models "
                         "return their sampler states")
    store.ensure_bucket(ledger.out)
    done = ledger.done_requests()
    batches, plan_errors = plan_batches(rows, info.capabilities, cfg, label, done)
    planned_ids = {c.id for b in batches for c in b}
    already_done = {r.row.id for r in rows} - planned_ids - {e.id for e in plan_errors}
    run_id = uuid.uuid4().hex
    errors += plan_errors
    rendered, failed, preview = set(), [], []
    if batches:
        connect_ray(address, num_cpus=max(os.cpu_count() or 1, cfg.actors * cfg.cpus_per_actor),
                    credentials=cfg.s3.credentials_env(), dashboard=False)
        stream = ray.data.from_items([{"clips": [asdict(c) for c in b]} for b in batches],
                                     override_num_blocks=len(batches))
        stream = stream.map_batches(
            renderer, batch_size=1, batch_format="pyarrow", num_cpus=cfg.cpus_per_actor,
            **({"num_gpus": cfg.gpus_per_actor} if cfg.gpus_per_actor else {}),
            compute=ray.data.ActorPoolStrategy(size=min(cfg.actors, len(batches))),
            # no S3 credentials through Ray: the actors find them in their node's own chain
            fn_constructor_kwargs={"model_ref": cfg.model, "label": label, "out": ledger.out.uri,
                                   "s3": cfg.s3.public(), "threads": cfg.cpus_per_actor, "run_id": run_id,
                                   "claim_timeout_s": cfg.claim_timeout_s, "gpus": cfg.gpus_per_actor,
                                   "options": cfg.pipeline.model_dump(),
                                   "trajectory_steps": tuple(cfg.trajectory_steps)},
            **(actor_options or {}))
        left = sum(len(b) for b in batches)
        for table in stream.iter_batches(batch_size=None, batch_format="pyarrow"):
            results = table.to_pylist()
            rendered |= {r["id"] for r in results if r["ok"]}
            failed += [RowError(r["line"], r["id"], r["field"], r["reason"]) for r in results if not r["ok"]]
            preview += [r for r in results if r["frames"] is not None]
            left -= len(results)
            if on_batch:
                on_batch(results, left)
    record_ids = ledger.done_ids()
    # a row another run was rendering is an error of this run only while it has no record (a concurrent run that
    # finishes later writes the ledgers again, from the record files)
    failed = [e for e in failed if not (e.reason == CLAIMED_ELSEWHERE and e.id in record_ids)]
    errors = sorted(errors + failed, key=lambda e: e.line)
    records = ledger.write_results(record_ids, rendered)
    ledger.write_errors([e.to_json() for e in errors])
    summary = {"out": ledger.out.uri, "run_id": run_id, "manifest": str(cfg.manifest),
               "manifest_sha256": sha256_bytes(manifest_bytes), "model": label,
               "pipeline": {"backend": info.backend, "class": info.pipeline_class, "folder": str(info.folder)},
               "rows": total_rows,
               "rendered_now": len(rendered), "already_done": len(already_done),
               "replaced": len({c.id for b in batches for c in b if c.replaces} & rendered),
               "videos": len(records), "errors": len(errors), "started": started, "finished": _now_iso(),
               "config": cfg.model_dump(mode="json", exclude={"s3"})}
    if cfg.report:
        summary["report"] = write_report(ledger, records, [asdict(e) for e in errors], summary)
    ledger.write_run(summary)
    if preview:
        _preview(ledger, sorted(preview, key=lambda r: r["line"]))
    return summary


def _now_iso() -> str:
    """Now as run.json records it: ISO 8601 with its zone, as model cards write times."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _preview(ledger: RenderLedger, results: list[dict]) -> None:
    """A contact sheet of clips this run rendered, from the frames the actors handed back (nothing re-read); clips
    of the first clip's shape only (a sheet is a grid)."""
    from vidgen.runs.plots import contact_sheet_png

    results = [r for r in results if r["shape"] == results[0]["shape"]]
    clips = np.stack([np.frombuffer(r["frames"], np.uint8).reshape(*r["shape"], 3) for r in results])
    with tempfile.TemporaryDirectory() as tmp:
        path = contact_sheet_png(clips, [r["prompt"] for r in results], Path(tmp) / "preview.png")
        ledger.write_preview(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, RenderConfig)
    summary = render(cfg, args.address)
    log.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 2 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
