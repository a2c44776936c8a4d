"""Prepare a data set: synthesise clips of the built-in world, encode them as H.264, write checksummed tar shards.

Shards are made in parallel by Ray Data (one task a shard); the dataset card and then the index are written
last by the driver, so a data set is visible only when complete. Splits: `train` (training compositions and
caption templates), `eval` (the same compositions, new seeds) and `heldout` (the compositions in
`vidgen.synth.HELD_OUT`, never in train). The index records a hash of every clip's pixels, and
`vidgen data verify` proves that no eval or held-out clip is also in train.

Run it:
    vidgen data prepare --n 2000 --out s3://BUCKET/shapes          # CLI; starts a local Ray
    python -m jobs.prepare --config prepare.yaml                  # a PrepareConfig as YAML
    ray job submit --working-dir . -- python -m jobs.prepare --config prepare.yaml --address auto
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from jobs._entrypoint import job_arguments
from jobs.connection import connect_ray
from storage import video
from storage.datasets import finish_dataset
from storage.objectstore import ObjectStore, S3Config, StorageError, parse_uri
from storage.shards import INDEX_FILE, SHARD_FOLDER, Sample, ShardEntry, build_shard
from vidgen import synth

log = logging.getLogger(__name__)
SPLITS = ("train", "eval", "heldout")


class PrepareConfig(BaseModel):
    """What to make and where to put it."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(2000, ge=1, description="clips in all splits together")
    out: str = Field("data/shapes", description="data set URI: a local folder, file:///… or s3://BUCKET/PREFIX")
    seed: int = 0
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="share of clips in the eval split")
    heldout_fraction: float = Field(0.05, ge=0, lt=1, description="share of clips in the heldout split")
    samples_per_shard: int = Field(256, ge=1, description="clips per tar shard (~1 MB at 32x32)")
    frames: int = Field(8, ge=2)
    height: int = Field(32, ge=16)
    width: int = Field(32, ge=16)
    fps: int = Field(8, ge=1)
    crf: int = Field(12, ge=0, le=51, description="H.264 quality: lower is closer to the rendered pixels")
    license: str = "cc0-1.0"
    s3: S3Config = Field(default_factory=S3Config)


def split_sizes(cfg: PrepareConfig) -> dict[str, int]:
    evals, heldout = round(cfg.n * cfg.eval_fraction), round(cfg.n * cfg.heldout_fraction)
    if evals + heldout >= cfg.n:
        raise ValueError(f"eval_fraction + heldout_fraction leave no training clips out of n={cfg.n}; lower them")
    return {"train": cfg.n - evals - heldout, "eval": evals, "heldout": heldout}


def plan_shards(cfg: PrepareConfig) -> list[dict]:
    """One plan a shard: split, shard number, first sample number, sample count."""
    plans = []
    for split, size in split_sizes(cfg).items():
        for number, first in enumerate(range(0, size, cfg.samples_per_shard)):
            plans.append({"split": split, "number": number, "first": first,
                          "count": min(cfg.samples_per_shard, size - first)})
    return plans


def _specs(cfg: PrepareConfig, plan: dict) -> list[synth.ClipSpec]:
    """The clips of one shard, seeded by (seed, split, shard) so each shard can be made alone, anywhere."""
    seed = int(np.random.SeedSequence([cfg.seed, SPLITS.index(plan["split"]), plan["number"]]).generate_state(1)[0])
    pool = "heldout" if plan["split"] == "heldout" else "train"
    return synth.sample_specs(plan["count"], seed, pool, cfg.frames, cfg.height, cfg.width)


def make_shard(plan: dict, cfg: PrepareConfig, store: ObjectStore) -> ShardEntry:
    """Render, encode and tar one shard's clips, write the shard, and return its index entry."""
    samples = []
    for offset, spec in enumerate(_specs(cfg, plan)):
        clip = synth.render(spec)
        samples.append(Sample(
            key=f"{plan['split']}-{plan['first'] + offset:07d}",
            mp4=video.encode(clip, "mp4", fps=cfg.fps, crf=cfg.crf),
            meta={"caption": spec.caption, "split": plan["split"],
                  "ground_truth": {k: v for k, v in asdict(spec).items() if k != "caption"},
                  "group": "/".join(spec.composition),
                  "content_sha256": hashlib.sha256(clip.tobytes()).hexdigest(),
                  "license": cfg.license, "source": f"vidgen.synth {synth.GENERATOR_VERSION}, seed {cfg.seed}"}))
    data, entry = build_shard(samples, plan["split"], plan["number"])
    store.write(parse_uri(cfg.out).join(SHARD_FOLDER, entry.name), data)
    return entry


def card_meta(cfg: PrepareConfig) -> tuple[dict, str]:
    heldout = ["/".join(c) for c in synth.HELD_OUT]
    meta = {
        "pretty_name": "vidgen shapes",
        "license": cfg.license,
        "task_categories": ["text-to-video"],
        "generator_version": synth.GENERATOR_VERSION,
        "provenance": "synthetic: rendered by vidgen.synth; no people, no scraped media",
        "seed": cfg.seed,
        "clip_shape": [cfg.frames, cfg.height, cfg.width, 3],
        "fps": cfg.fps,
        "codec": f"H.264 (libx264, yuv420p, crf {cfg.crf}) in MP4",
        "heldout_groups": heldout,
    }
    body = f"""# vidgen shapes

Short clips of one coloured shape moving across a textured grey background, each with a caption, rendered by
`vidgen.synth` ({synth.GENERATOR_VERSION}) from seed {cfg.seed}. Every clip is synthetic: there are no people,
no personal data and no third-party media, so the data set is released under {cfg.license}.

## Splits
- `train`: {len(synth.TRAIN_COMPOSITIONS)} of the {len(synth.COMPOSITIONS)} colour x shape x direction compositions,
  captions from the training templates.
- `eval`: the same compositions and templates, new seeds.
- `heldout`: the {len(heldout)} compositions never shown in train: {", ".join(heldout)}.

## Layout and checks
`shards/SPLIT-NNNNN.tar` hold `KEY.mp4` + `KEY.json` (caption, ground truth, license, source, sha256 of the
mp4). `index.json` lists the sha256 of every shard, every sample's mp4 and json, and a hash of every clip's
pixels; `vidgen data verify URI` re-checks all of them and proves no eval or held-out clip is in train.
"""
    return meta, body


def _make_shard_row(plan: dict, config: dict) -> dict:
    """In a Ray task: one shard written; its index entry as the row."""
    cfg = PrepareConfig.model_validate(config)
    return {"entry": json.dumps(asdict(make_shard(plan, cfg, ObjectStore(cfg.s3))))}


def prepare(cfg: PrepareConfig, address: str | None = None,
            on_shard: Callable[[ShardEntry, int], None] | None = None) -> dict:
    """Make the data set described by `cfg`; returns a summary. `on_shard(entry, total)` reports progress."""
    import ray

    store = ObjectStore(cfg.s3)
    out = parse_uri(cfg.out)
    plans = plan_shards(cfg)
    store.ensure_bucket(out)
    if store.exists(out.join(INDEX_FILE)):
        raise StorageError(f"{out.uri} already holds a data set: choose another --out or delete it first")
    connect_ray(address, credentials=cfg.s3.credentials_env(), dashboard=False)
    # The tasks get the config without S3 credentials: they find them in their node's own chain
    shards = ray.data.from_items(plans, override_num_blocks=len(plans)).map(
        _make_shard_row, fn_kwargs={"config": {**cfg.model_dump(mode="json", exclude={"s3"}), "s3": cfg.s3.public()}})
    entries = []
    for row in shards.iter_rows():
        entries.append(ShardEntry.from_dict(json.loads(row["entry"])))
        if on_shard:
            on_shard(entries[-1], len(plans))
    index = finish_dataset(store, out.uri, entries, *card_meta(cfg))
    counts = index.counts()
    return {"out": out.uri, "samples": index.num_samples, "shards": len(index.shards),
            "splits": {split: counts[split] for split in SPLITS if split in counts},
            "bytes": sum(s.bytes for s in index.shards)}


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, PrepareConfig)
    summary = prepare(cfg, args.address, lambda e, total: log.info("wrote %s (%d samples)", e.name, len(e.samples)))
    log.info("data set ready: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
