"""Audit a data set for poisoning and backdoors: read its clips once, score caption tokens and sources, write a report.

In parallel (Ray Data, one task a shard), each shard is read and checked against the index, and each clip is
decoded once into its clip features (`VideoFeatureNet`, FVD-vidgen's space), optionally the frame features of its
middle frame (efficientnet-lite0; ~0.07 s a clip on one core; off by default, see `AuditConfig`), and its perceptual
hash. The driver scores every
caption token and every source with `vidgen.audit` (spectral signatures of caption residuals, coherence,
concentration: the module says how) and writes the report to OUT (default URI/audit, where training looks for it):

    audit.json    suspected triggers and sources (most suspicious first), the thresholds, per-source and
                  per-licence statistics, near-duplicate clusters across sources, the top-scored tokens
    audit.md      the same for a person
    trigger-TOKEN.png, source-NAME.png   a contact sheet of each flagged group: what to look at before deciding

Then `vidgen data filter URI --drop-token T --drop-source S --out URI2` makes a data set without them.

Run it:
    vidgen data audit data/mine [--json] [--out REPORT]                  # starts a local Ray; exit 3 if flagged
    python -m jobs.audit --config audit.yaml [--address auto]
    ray job submit --working-dir . -- python -m jobs.audit --config audit.yaml --address auto
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from jobs._entrypoint import job_arguments
from jobs.connection import connect_ray
from storage.audits import AUDIT_FILE, audit_location
from storage.datasets import open_dataset
from storage.objectstore import ObjectStore, S3Config, StorageError, parse_uri
from storage.phash import NEAR_BITS, hamming, hash_array
from storage.shards import ShardEntry
from vidgen.audit import AuditResult, AuditThresholds, audit_corpus

log = logging.getLogger(__name__)
METHOD = ("spectral signatures (Tran, Li and Madry 2018) of caption residuals in clip-feature space, times coherence "
          "and source concentration (vidgen.audit)")
EXAMPLES = 8  # clip keys listed, and rows of a contact sheet, per flagged group


class AuditConfig(BaseModel):
    """Which data set to audit, where the report goes, and what flags a token or a source."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(description="the data set: a folder, file:///… or s3://BUCKET/PREFIX (any vidgen data set)")
    out: str | None = Field(None, description="report folder (local or s3://); default URI/audit, where `vidgen "
                                              "train` looks for flags not acted on")
    frame_features: bool = Field(False, description="add efficientnet-lite0 features of each clip's middle frame to "
                                 "its clip features (~0.07 s a clip on one core). Off by default: on the built-in "
                                 "world they see background texture more than the subject, and a planted trigger's "
                                 "coherence fell from 4.2 (clip features) to 1.5 (both)")
    thresholds: AuditThresholds = Field(default_factory=AuditThresholds)
    s3: S3Config = Field(default_factory=S3Config)

    def report_location(self):
        return parse_uri(self.out) if self.out else audit_location(self.uri)


# --- in a Ray task: one shard -> its clips' facts and features ---


def shard_features(shard: ShardEntry, shard_uri: str, cfg: AuditConfig) -> dict:
    """Read one shard, check it against the index, and describe each clip: facts, features, its MP4 (kept for the
    contact sheets, so no clip is read twice)."""
    import torch

    from storage.phash import clip_phash
    from storage.shards import VerifiedSample, verified_samples
    from storage.video import decode
    from vidgen.perceptual import frame_features, video_features
    from vidgen.runs.feature_nets import efficientnet_lite0, video_feature_net

    torch.set_num_threads(1)  # one task a CPU
    facts, clips, mp4s = [], [], []
    for sample in verified_samples(ObjectStore(cfg.s3).read(shard_uri), shard):
        if not isinstance(sample, VerifiedSample):
            log.warning("skipped: %s", sample)
            continue
        clip = decode(sample.mp4)
        facts.append({"key": sample.key, "caption": str(sample.meta.get("caption", "")),
                      "source": str(sample.meta.get("source", "unknown")),
                      "license": str(sample.meta.get("license", "unknown")), "split": shard.split,
                      "phash": clip_phash(clip)})
        clips.append(clip)
        mp4s.append(sample.mp4)
    if not clips:
        return {"facts": "[]", "clip_features": b"", "frame_features": b"", "mp4": []}
    batch = np.stack(clips)
    frames = (frame_features(efficientnet_lite0(), batch[:, [len(batch[0]) // 2]]).mean(axis=1)
              if cfg.frame_features else np.zeros((len(batch), 0), np.float32))
    return {"facts": json.dumps(facts), "mp4": mp4s,
            "clip_features": video_features(video_feature_net(), batch).astype(np.float32).tobytes(),
            "frame_features": frames.astype(np.float32).tobytes()}


def _shard_row(row: dict, config: dict) -> dict:
    cfg = AuditConfig.model_validate(config)
    return shard_features(ShardEntry.from_dict(json.loads(row["shard"])), row["uri"], cfg)


# --- the driver ---


def near_duplicate_clusters(facts: list[dict]) -> list[dict]:
    """Groups of clips from more than one source whose perceptual hashes are within `NEAR_BITS` of each other
    (linked: a chain of near pairs is one group)."""
    if len(facts) < 2:
        return []
    hashes = hash_array([f["phash"] for f in facts])
    parent = list(range(len(facts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, fact in enumerate(facts[:-1]):
        for j in np.flatnonzero(hamming(fact["phash"], hashes[i + 1:]) <= NEAR_BITS) + i + 1:
            parent[root(int(j))] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(facts)):
        groups.setdefault(root(i), []).append(i)
    clusters = [{"sources": sorted({facts[i]["source"] for i in g}), "keys": [facts[i]["key"] for i in g]}
                for g in groups.values() if len({facts[i]["source"] for i in g}) > 1]
    return sorted(clusters, key=lambda c: (-len(c["keys"]), c["keys"][0]))


def statistics(facts: list[dict], result: AuditResult) -> dict:
    """Per-source and per-licence counts, with each source's mean caption mismatch."""
    mismatch = {s.source: round(s.mismatch, 3) for s in result.sources}
    per_source: dict[str, dict] = {}
    for f in facts:
        entry = per_source.setdefault(f["source"], {"clips": 0, "licences": Counter(), "splits": Counter()})
        entry["clips"] += 1
        entry["licences"][f["license"]] += 1
        entry["splits"][f["split"]] += 1
    per_licence: dict[str, dict] = {}
    for f in facts:
        entry = per_licence.setdefault(f["license"], {"clips": 0, "sources": set()})
        entry["clips"] += 1
        entry["sources"].add(f["source"])
    return {
        "per_source": {s: {"clips": e["clips"], "licences": dict(e["licences"]), "splits": dict(e["splits"]),
                           "caption_mismatch": mismatch.get(s)} for s, e in sorted(per_source.items())},
        "per_licence": {lic: {"clips": e["clips"], "sources": len(e["sources"])}
                        for lic, e in sorted(per_licence.items())},
    }


def report(cfg: AuditConfig, facts: list[dict], result: AuditResult) -> dict:
    """The audit as JSON: what `--json` prints and `audit.json` holds, most suspicious first."""
    def trigger(t) -> dict:
        return {"token": t.token, "score": round(t.score, 3), "clips": len(t.clips), "sources": t.sources,
                "examples": [facts[i]["key"] for i in t.clips[:EXAMPLES]], "separation": round(t.separation, 3),
                "coherence": round(t.coherence, 3), "concentration": round(t.concentration, 3)}

    return {
        "dataset": parse_uri(cfg.uri).uri,
        "clips": len(facts),
        "method": METHOD,
        "features": "clip features (fvd-vidgen)" + (" + middle-frame features (efficientnet-lite0)"
                                                     if cfg.frame_features else ""),
        "suspected_triggers": [trigger(t) for t in result.suspected_triggers],
        "suspected_sources": [{"source": s.source, "score": round(s.score, 3), "reasons": s.reasons}
                              for s in result.suspected_sources],
        "thresholds": result.thresholds.model_dump(),
        "top_tokens": [trigger(t) for t in result.tokens[:10]],
        **statistics(facts, result),
        "near_duplicate_clusters": near_duplicate_clusters(facts),
    }


def markdown(summary: dict) -> str:
    """The report for a person: what was flagged, with the numbers, and what to do next."""
    lines = [f"# Data audit of `{summary['dataset']}`", "",
             f"{summary['clips']} clips; features: {summary['features']}; method: {summary['method']}.", ""]
    lines += ["## Suspected triggers", ""]
    lines += [f"- `{t['token']}`: score {t['score']:.1f} (separation {t['separation']:.2f}, coherence "
              f"{t['coherence']:.2f}, concentration {t['concentration']:.2f}), {t['clips']} clips from "
              f"{', '.join(f'{s} ({n})' for s, n in t['sources'].items())}; examples {', '.join(t['examples'])}; "
              f"contact sheet `{sheet_name('trigger', t['token'])}`" for t in summary["suspected_triggers"]]
    lines += ["- none" if not summary["suspected_triggers"] else "", "## Suspected sources", ""]
    lines += [f"- `{s['source']}` (score {s['score']:.2f}): {'; '.join(s['reasons'])}; contact sheet "
              f"`{sheet_name('source', s['source'])}`" for s in summary["suspected_sources"]]
    lines += ["- none" if not summary["suspected_sources"] else "", "## Sources", "",
              "| source | clips | licences | caption mismatch |", "|---|---|---|---|"]
    lines += [f"| {s} | {e['clips']} | {', '.join(e['licences'])} | {e['caption_mismatch']} |"
              for s, e in summary["per_source"].items()]
    lines += ["", f"Near-duplicate clusters across sources: {len(summary['near_duplicate_clusters'])}.", "",
              "## Next", "", "Look at each contact sheet. To drop what you judge poisoned: `vidgen data filter "
              f"{summary['dataset']} --drop-token TOKEN --drop-source SOURCE --out NEW_URI`. Thresholds: "
              f"`{json.dumps(summary['thresholds'])}`.", ""]
    return "\n".join(lines)


def sheet_name(kind: str, name: str) -> str:
    """A contact sheet's file name: the group's name with anything but letters, digits, '-' and '_' as '_'."""
    return f"{kind}-{re.sub(r'[^A-Za-z0-9_-]', '_', name)[:80]}.png"


def _contact_sheets(summary: dict, facts: list[dict], mp4s: list[bytes], result: AuditResult) -> dict[str, bytes]:
    """{file name: PNG} of each flagged group's example clips, captioned with key and caption."""
    from storage.video import decode
    from vidgen.runs.plots import contact_sheet_png

    groups = {sheet_name("trigger", t.token): t.clips[:EXAMPLES] for t in result.suspected_triggers}
    for s in result.suspected_sources:
        groups[sheet_name("source", s.source)] = [i for i, f in enumerate(facts) if f["source"] == s.source][:EXAMPLES]
    sheets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in groups.items():
            clips = np.stack([decode(mp4s[i]) for i in rows])
            path = contact_sheet_png(clips, [f"{facts[i]['key']}: {facts[i]['caption']}"[:60] for i in rows],
                                     Path(tmp) / name)
            sheets[name] = path.read_bytes()
    return sheets


def audit(cfg: AuditConfig, address: str | None = None,
          on_shard: Callable[[int, int], None] | None = None) -> dict:
    """Audit the data set `cfg.uri`, write the report to `cfg.out` (default URI/audit); returns the report, with
    `report` naming where it went. `on_shard(done, total)` reports progress."""
    import ray

    store = ObjectStore(cfg.s3)
    dataset = open_dataset(store, cfg.uri)
    connect_ray(address, credentials=cfg.s3.credentials_env(), dashboard=False)
    rows = [{"shard": json.dumps(asdict(s)), "uri": dataset.shard_uri(s)} for s in dataset.index.shards]
    config = {**cfg.model_dump(mode="json", exclude={"s3"}), "s3": cfg.s3.public()}
    facts, clip_blocks, frame_blocks, mp4s = [], [], [], []
    results = ray.data.from_items(rows, override_num_blocks=len(rows)).map(_shard_row, fn_kwargs={"config": config})
    for done, row in enumerate(results.iter_rows(), start=1):
        shard_facts = json.loads(row["facts"])
        facts += shard_facts
        mp4s += list(row["mp4"])
        clip_blocks.append(np.frombuffer(row["clip_features"], np.float32).reshape(len(shard_facts), -1))
        frame_blocks.append(np.frombuffer(row["frame_features"], np.float32).reshape(len(shard_facts), -1))
        if on_shard:
            on_shard(done, len(rows))
    if not facts:
        raise StorageError(f"no clip of {dataset.location.uri} matched its index: run `vidgen data verify "
                           f"{dataset.location.uri}` to see what is wrong")
    blocks = [np.concatenate(clip_blocks)] + ([np.concatenate(frame_blocks)] if cfg.frame_features else [])
    result = audit_corpus(blocks, [f["caption"] for f in facts], [f["source"] for f in facts], cfg.thresholds)
    summary = report(cfg, facts, result)
    out = cfg.report_location()
    store.ensure_bucket(out)
    for name, png in _contact_sheets(summary, facts, mp4s, result).items():
        store.write(out.join(name), png)
    store.write(out.join("audit.md"), markdown(summary).encode())
    store.write(out.join(AUDIT_FILE), json.dumps(summary, indent=1).encode())
    return {**summary, "report": out.uri}


def main(argv: list[str] | None = None) -> int:
    cfg, args = job_arguments(argv, __doc__, AuditConfig)
    summary = audit(cfg, args.address, lambda done, total: log.info("read %d of %d shards", done, total))
    log.info("audit written to %s: %d suspected triggers, %d suspected sources", summary["report"],
             len(summary["suspected_triggers"]), len(summary["suspected_sources"]))
    return 3 if summary["suspected_triggers"] or summary["suspected_sources"] else 0


if __name__ == "__main__":
    sys.exit(main())
