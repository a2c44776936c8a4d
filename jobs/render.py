"""Bulk render: every row of a manifest becomes one MP4, rendered by a pool of Ray actors that load the model once.

    OUT/videos/<id>.mp4     one per good row, written with a conditional put (never duplicated or half-written)
    OUT/results/<id>.json   the row's ledger record, written after its video: a row with a record is done
    OUT/results.jsonl       all records (id, key, sha256, seconds, model, sampler settings), rebuilt each run from
                            the previous results.jsonl plus the records written since (one GET a new record)
    OUT/errors.jsonl        every row not rendered: {"line", "id", "field", "reason"}
    OUT/run.json            manifest hash, config, model, start and end, counts

Run again on the same OUT, it renders only rows without a record, so a killed run loses at most the batches in
flight. Rows are validated first (`storage.manifest`), then grouped by sampler settings into batches of
`batch_size`; one bad prompt fails its row, not its batch.

Run it:
    vidgen render examples/manifest.jsonl --out out/demo                # starts a local Ray
    python -m jobs.render --config render.yaml [--address auto]          # a RenderConfig as YAML
    ray job submit --working-dir . -- python -m jobs.render --config render.yaml --address auto
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from jobs._entrypoint import job_arguments
from jobs._ray import ensure_ray
from storage.manifest import ManifestRow, RowError, derive_seed, manifest_format, output_key, parse_manifest
from storage.objectstore import AlreadyExists, ObjectStore, S3Config, parse_uri
from storage.package import WEIGHTS_FILE, sha256_bytes, sha256_file

log = logging.getLogger(__name__)
RESULTS, ERRORS, RUN, RECORDS = "results.jsonl", "errors.jsonl", "run.json", "results"


class RenderConfig(BaseModel):
    """What to render, with which model, where to, and how wide."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="JSONL or CSV file: a local path, file:///… or s3://…")
    model: str | None = Field(None, description="model folder, shipped model name or registry reference "
                                                "(default: the shipped demo model)")
    out: str = Field("out/render", description="output folder or s3://BUCKET/PREFIX")
    seed: int = Field(0, description="run seed: rows without a seed get one derived from (seed, id)")
    steps: int | None = Field(None, ge=1, le=1000, description="sampler steps for rows that name none "
                                                               "(default: the model's)")
    guidance: float | None = Field(None, ge=1.0, le=20.0, description="guidance for rows that name none")
    batch_size: int = Field(8, ge=1, le=256, description="clips sampled together by one actor")
    # 2 single-threaded actors beat 1 two-threaded one on 2 cores (benchmarks/render.py: 1.3x steady state)
    actors: int = Field(2, ge=1, description="sampling actors, each holding the model once")
    cpus_per_actor: int = Field(1, ge=1, description="CPUs (and torch threads) per actor")
    preview: bool = Field(False, description="also write preview.png, a contact sheet of the first clips")
    s3: S3Config = Field(default_factory=S3Config)
    die_after_batches: int | None = Field(None, ge=1, description="test hook: each actor process exits "
                                                                  "after writing this many batches and is not "
                                                                  "restarted, so the job dies mid-run")


def plan_batches(rows: list, model_shape: tuple[int, int, int], sampler: dict, cfg: RenderConfig
                 ) -> tuple[list[list[dict]], list[RowError]]:
    """Fill each row's defaults, refuse what the model cannot make, and batch rows that share sampler settings."""
    frames, height, width = model_shape
    groups: dict[tuple, list[dict]] = {}
    errors = []
    for item in rows:
        row: ManifestRow = item.row
        for field, asked, native in (("frames", row.frames, frames), ("height", row.height, height),
                                     ("width", row.width, width)):
            if asked is not None and asked != native:
                errors.append(RowError(item.line, row.id, field, f"{field}={asked}: this model makes only "
                                                                 f"{frames}x{height}x{width} clips"))
                break
        else:
            if row.negative_prompt:
                errors.append(RowError(item.line, row.id, "negative_prompt", "this model does not take negative "
                                                                             "prompts; leave the field out"))
                continue
            job = {"line": item.line, "id": row.id, "prompt": row.prompt, "key": output_key(row),
                   "seed": row.seed if row.seed is not None else derive_seed(cfg.seed, row.id),
                   "steps": row.steps or cfg.steps or sampler["steps"],
                   "guidance": row.guidance or cfg.guidance or sampler["guidance"]}
            groups.setdefault((job["steps"], job["guidance"]), []).append(job)
    batches = [jobs[i:i + cfg.batch_size] for _, jobs in sorted(groups.items())
               for i in range(0, len(jobs), cfg.batch_size)]
    return batches, errors


class Renderer:
    """A Ray Data actor: loads the model and text encoder once, then samples, encodes and writes batches."""

    def __init__(self, folder: str, out: str, s3: dict, model_label: str, threads: int,
                 die_after_batches: int | None = None):
        import torch

        from vidgen.checkpoint import load_model
        from vidgen.text import TextEncoder

        torch.set_num_threads(threads)
        self.model = load_model(folder)
        self.encoder = TextEncoder()
        self.store = ObjectStore(S3Config(**s3))
        self.out = parse_uri(out)
        self.model_label = model_label
        self.die_after_batches, self.batches_written = die_after_batches, 0

    def _encodable(self, jobs: list[dict]) -> tuple[list[dict], list[dict]]:
        """Split off rows whose prompt the text encoder refuses, so they fail alone."""
        try:
            self.encoder.encode([j["prompt"] for j in jobs])
            return jobs, []
        except ValueError:
            good, bad = [], []
            for job in jobs:
                try:
                    self.encoder.encode([job["prompt"]])
                    good.append(job)
                except ValueError as e:
                    bad.append({**job, "ok": False, "field": "prompt", "reason": str(e)})
            return good, bad

    def _write(self, job: dict, data: bytes) -> dict:
        key = self.out.join(job["key"])
        digest = sha256_bytes(data)
        try:
            self.store.write(key, data, if_absent=True)
        except AlreadyExists:  # a killed run wrote the video but not its record; the same row renders the same bytes
            if sha256_bytes(self.store.read(key)) != digest:
                return {**job, "ok": False, "field": None,
                        "reason": f"{key.uri} exists with other content; move it away to render this row"}
        return {**job, "ok": True, "sha256": digest}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from storage.video import encode
        from vidgen.diffusion import sample
        from vidgen.training import autocast_dtype

        jobs = json.loads(batch["rows"][0])
        good, results = self._encodable(jobs)
        if good:
            started = time.perf_counter()
            out = sample(self.model, self.encoder.encode([j["prompt"] for j in good]), [j["seed"] for j in good],
                         good[0]["steps"], good[0]["guidance"], autocast_dtype("auto"))
            seconds = (time.perf_counter() - started) / len(good)
            for job, clip in zip(good, out.frames, strict=True):
                result = self._write(job, encode(clip, "mp4"))
                if result["ok"]:
                    record = {"id": job["id"], "key": job["key"], "sha256": result["sha256"],
                              "seconds": round(seconds, 4), "model": self.model_label, "seed": job["seed"],
                              "steps": job["steps"], "guidance": job["guidance"], "prompt": job["prompt"]}
                    self.store.write(self.out.join(RECORDS, f"{job['id']}.json"), json.dumps(record).encode())
                results.append(result)
        self.batches_written += 1
        if self.die_after_batches and self.batches_written >= self.die_after_batches:
            os._exit(1)
        return {"result": np.array([json.dumps(r) for r in results])}


def _done_ids(store: ObjectStore, out) -> set[str]:
    prefix = out.join(RECORDS).uri + "/"
    return {o.uri.removeprefix(prefix).removesuffix(".json") for o in store.list(out.join(RECORDS))}


def _ledger(store: ObjectStore, out, record_ids: set[str]) -> list[dict]:
    """Every record, by id: those already in results.jsonl (records are written once, never changed) and a read of
    each record written since. A re-run with nothing to do reads one object, not one per row."""
    known: dict[str, dict] = {}
    if store.exists(out.join(RESULTS)):
        for line in store.read(out.join(RESULTS)).decode().splitlines():
            record = json.loads(line)
            known[record["id"]] = record
    for record_id in sorted(record_ids - known.keys()):
        known[record_id] = json.loads(store.read(out.join(RECORDS, f"{record_id}.json")))
    return [known[i] for i in sorted(record_ids)]


def _model_label(ref: str | None, folder: Path) -> str:
    """name@version for registry models; the folder name and a weights digest otherwise."""
    if ref and "@" in ref:
        return f"{folder.parent.name}@{folder.name}"
    return f"{folder.name}#{sha256_file(folder / WEIGHTS_FILE)[:12]}"


def render(cfg: RenderConfig, address: str | None = None,
           on_batch: Callable[[list[dict], int], None] | None = None) -> dict:
    """Render every good row not yet done; returns counts and where things went. `on_batch(results, rows_left)`."""
    import ray

    from vidgen.checkpoint import read_config
    from vidgen.pipelines import resolve_model

    started = time.time()
    store = ObjectStore(cfg.s3)
    out = parse_uri(cfg.out)
    manifest_bytes = store.read(cfg.manifest)
    rows, errors = parse_manifest(manifest_bytes, manifest_format(str(cfg.manifest)))
    total_rows = len(rows) + len({e.line for e in errors})
    folder = resolve_model(cfg.model)
    saved = read_config(folder)
    shape = (saved["model"]["frames"], saved["model"]["height"], saved["model"]["width"])
    store.ensure_bucket(out)
    done = _done_ids(store, out)
    batches, plan_errors = plan_batches([r for r in rows if r.row.id not in done], shape,
                                        saved.get("sampler", {"steps": 24, "guidance": 3.0}), cfg)
    errors += plan_errors
    label = _model_label(cfg.model, folder)
    rendered, failed = 0, []
    if batches:
        ensure_ray(address, num_cpus=max(os.cpu_count() or 1, cfg.actors * cfg.cpus_per_actor))
        stream = ray.data.from_items([{"rows": json.dumps(b)} for b in batches], override_num_blocks=len(batches))
        stream = stream.map_batches(
            Renderer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(cfg.actors, len(batches))),
            num_cpus=cfg.cpus_per_actor,
            fn_constructor_kwargs={"folder": str(folder), "out": out.uri, "s3": cfg.s3.model_dump(),
                                   "model_label": label, "threads": cfg.cpus_per_actor,
                                   "die_after_batches": cfg.die_after_batches},
            ray_remote_args_fn=(lambda: {"max_restarts": 0, "max_task_retries": 0}) if cfg.die_after_batches
            else None)
        left = sum(len(b) for b in batches)
        for row in stream.iter_batches(batch_size=None, batch_format="numpy"):
            results = [json.loads(r) for r in row["result"]]
            rendered += sum(r["ok"] for r in results)
            failed += [RowError(r["line"], r["id"], r.get("field"), r["reason"]) for r in results if not r["ok"]]
            left -= len(results)
            if on_batch:
                on_batch(results, left)
    errors = sorted(errors + failed, key=lambda e: e.line)
    records = _ledger(store, out, _done_ids(store, out))
    store.write(out.join(RESULTS), "".join(json.dumps(r) + "\n" for r in records).encode())
    store.write(out.join(ERRORS), "".join(e.to_json() + "\n" for e in errors).encode())
    summary = {"out": out.uri, "manifest": str(cfg.manifest), "manifest_sha256": sha256_bytes(manifest_bytes),
               "model": label, "rows": total_rows,
               "rendered_now": rendered, "already_done": len(done & {r.row.id for r in rows}),
               "videos": len(records), "errors": len(errors), "started": started, "finished": time.time(),
               "config": cfg.model_dump(mode="json", exclude={"s3"})}
    store.write(out.join(RUN), json.dumps(summary, indent=1).encode())
    if cfg.preview and records:
        _preview(store, out, records[:8])
    return summary


def _preview(store: ObjectStore, out, records: list[dict]) -> None:
    from storage.video import decode
    from vidgen.report import contact_sheet_png

    clips = np.stack([decode(store.read(out.join(r["key"]))) for r in records])
    with tempfile.TemporaryDirectory() as tmp:
        path = contact_sheet_png(clips, [r["prompt"] for r in records], Path(tmp) / "preview.png")
        store.write(out.join("preview.png"), path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, RenderConfig)
    summary = render(cfg, args.address)
    log.info("done: %s", json.dumps({k: v for k, v in summary.items() if k != "config"}))
    return 2 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
