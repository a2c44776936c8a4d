"""Filter a data set: a new data set without the clips of some sources and of captions carrying some tokens.

What an audit (`vidgen data audit`) flagged and a person judged poisoned is dropped here. In parallel (Ray Data,
one task a shard), each shard is read and checked against the index, the clips to drop are left out, and the rest
are written unchanged (same keys, same bytes) as a shard of the new data set. The new card is the old one's
header plus `filtered`: where it came from, the sources and tokens dropped, how many clips each reason removed,
and the audit's numbers for each (from SRC/audit/audit.json, when SRC was audited). The index is written last, so
the new data set verifies as any other (`vidgen data verify`).

Run it:
    vidgen data filter data/mine --drop-token zq --drop-source poisoner --out data/mine-clean   # starts a local Ray
    python -m jobs.filter_dataset --config filter.yaml [--address auto]
    ray job submit --working-dir . -- python -m jobs.filter_dataset --config filter.yaml --address auto
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import asdict

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobs._entrypoint import job_arguments
from jobs.connection import connect_ray
from storage.audits import read_audit
from storage.cards import parse_card
from storage.datasets import finish_dataset, open_dataset
from storage.objectstore import ObjectStore, S3Config, StorageError, parse_uri
from storage.shards import (
    CARD_FILE,
    INDEX_FILE,
    SHARD_FOLDER,
    Sample,
    ShardEntry,
    VerifiedSample,
    build_shard,
    verified_samples,
)
from vidgen.audit import caption_tokens

log = logging.getLogger(__name__)


class FilterConfig(BaseModel):
    """Which data set, what to drop from it, and where the new one goes."""

    model_config = ConfigDict(extra="forbid")

    src: str = Field(description="the data set to filter: a folder, file:///… or s3://BUCKET/PREFIX")
    out: str = Field(description="the new data set (must not hold one yet)")
    drop_sources: list[str] = Field(default_factory=list, description="every clip of these sources is dropped")
    drop_tokens: list[str] = Field(default_factory=list, description="every clip whose caption holds one of these "
                                   "tokens (a word or bigram, case-folded, as the audit reports them) is dropped")
    command: str = Field("", description="how the run was started, for the card (set by the CLI)")
    s3: S3Config = Field(default_factory=S3Config)

    @model_validator(mode="after")
    def _something_to_drop(self):
        if not self.drop_sources and not self.drop_tokens:
            raise ValueError("nothing to drop: give --drop-source and/or --drop-token (see `vidgen data audit`)")
        if parse_uri(self.src).uri == parse_uri(self.out).uri:
            raise ValueError("--out must be a new data set, not SRC itself")
        return self


def drop_reason(meta: dict, sources: set[str], tokens: set[str]) -> str | None:
    """Why a clip is dropped ('source S' or 'token T'), or None to keep it."""
    if meta.get("source") in sources:
        return f"source {meta['source']}"
    held = caption_tokens(str(meta.get("caption", ""))) & tokens
    return f"token {sorted(held)[0]}" if held else None


def filter_shard(shard: ShardEntry, cfg: FilterConfig) -> tuple[ShardEntry | None, Counter]:
    """Write the kept clips of one shard as the new data set's shard of the same name; (its entry or None when
    nothing is kept, the dropped clips counted by reason). A clip failing its checksum stops the run."""
    store = ObjectStore(cfg.s3)
    src = parse_uri(cfg.src)
    data = store.read(src.join(SHARD_FOLDER, shard.name))
    sources, tokens = set(cfg.drop_sources), {t.lower() for t in cfg.drop_tokens}
    kept, dropped = [], Counter()
    for sample in verified_samples(data, shard):
        if not isinstance(sample, VerifiedSample):
            raise StorageError(f"{sample}: run `vidgen data verify {src.uri}` and restore the data set first")
        if reason := drop_reason(sample.meta, sources, tokens):
            dropped[reason] += 1
        else:
            meta = {k: v for k, v in sample.meta.items() if k != "sha256"}  # re-derived by Sample.json_bytes
            kept.append(Sample(sample.key, sample.mp4, meta))
    if not kept:
        return None, dropped
    number = int(shard.name.rsplit("-", 1)[1].split(".")[0])
    out_data, entry = build_shard(kept, shard.split, number)
    store.write(parse_uri(cfg.out).join(SHARD_FOLDER, entry.name), out_data)
    return entry, dropped


def _filter_row(row: dict, config: dict) -> dict:
    cfg = FilterConfig.model_validate(config)
    entry, dropped = filter_shard(ShardEntry.from_dict(json.loads(row["shard"])), cfg)
    return {"entry": json.dumps(asdict(entry)) if entry else "", "dropped": json.dumps(dict(dropped))}


def filtered_card(cfg: FilterConfig, card_text: str, dropped: Counter, audit: dict | None) -> tuple[dict, str]:
    """The source card's header plus `filtered` (what was dropped, why, with the audit's numbers), and a body
    that says so above the source card's own."""
    meta, body = parse_card(card_text, f"{cfg.src}/{CARD_FILE}")
    audit = audit or {}
    triggers = {t["token"]: t for t in audit.get("suspected_triggers", [])}
    flagged_sources = {s["source"]: s for s in audit.get("suspected_sources", [])}
    filtered = {
        "from": parse_uri(cfg.src).uri,
        "dropped_sources": sorted(cfg.drop_sources),
        "dropped_tokens": sorted(t.lower() for t in cfg.drop_tokens),
        "dropped_clips": sum(dropped.values()),
        "dropped_by_reason": dict(sorted(dropped.items())),
        "audit": {
            "method": audit.get("method", "no audit of the source data set was found"),
            "tokens": {t: {k: triggers[t][k] for k in ("score", "clips", "separation", "coherence", "concentration")}
                       for t in sorted(cfg.drop_tokens) if t in triggers},
            "sources": {s: {"score": flagged_sources[s]["score"], "reasons": flagged_sources[s]["reasons"]}
                        for s in sorted(cfg.drop_sources) if s in flagged_sources},
        },
        "command": cfg.command or "jobs.filter_dataset.filter_dataset()",
    }
    reasons = "\n".join(f"- {reason}: {n} clips" for reason, n in filtered["dropped_by_reason"].items()) or "- none"
    note = (f"# Filtered from `{filtered['from']}`\n\n{filtered['dropped_clips']} clips dropped (the audit's "
            f"numbers for each flag are in the header's `filtered.audit`):\n{reasons}\n\nMade with "
            f"`{filtered['command']}`. The source data set's card follows.\n\n")
    return {**meta, "filtered": filtered}, note + body


def filter_dataset(cfg: FilterConfig, address: str | None = None) -> dict:
    """Make the filtered data set at `cfg.out`; returns a summary (clips kept and dropped by reason)."""
    import ray

    store = ObjectStore(cfg.s3)
    source = open_dataset(store, cfg.src)
    out = parse_uri(cfg.out)
    store.ensure_bucket(out)
    if store.exists(out.join(INDEX_FILE)):
        raise StorageError(f"{out.uri} already holds a data set: choose another --out or delete it first")
    connect_ray(address, credentials=cfg.s3.credentials_env(), dashboard=False)
    rows = [{"shard": json.dumps(asdict(s))} for s in source.index.shards]
    config = {**cfg.model_dump(mode="json", exclude={"s3"}), "s3": cfg.s3.public()}
    entries, dropped = [], Counter()
    for row in ray.data.from_items(rows, override_num_blocks=len(rows)).map(
            _filter_row, fn_kwargs={"config": config}).iter_rows():
        dropped.update(json.loads(row["dropped"]))
        if row["entry"]:
            entries.append(ShardEntry.from_dict(json.loads(row["entry"])))
    if not entries:
        raise StorageError(f"every clip of {source.location.uri} was dropped: nothing is left to make a data set of")
    card_text = store.read(source.location.join(CARD_FILE)).decode()
    index = finish_dataset(store, out.uri, entries,
                           *filtered_card(cfg, card_text, dropped, read_audit(store, cfg.src)))
    return {"out": out.uri, "clips": index.num_samples, "splits": index.counts(), "dropped": dict(dropped)}


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, FilterConfig)
    summary = filter_dataset(cfg, args.address)
    log.info("filtered data set ready: %s", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
