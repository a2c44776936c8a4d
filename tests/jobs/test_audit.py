"""`vidgen data audit` and `vidgen data filter` end to end on a local Ray: a planted trigger is found (S3 in and
out), a clean corpus exits 0, the filtered data set verifies and its card names what was dropped."""

from __future__ import annotations

import json
import uuid

import pytest
from typer.testing import CliRunner

from benchmarks.backdoor import POISONER, TRIGGER, planted_clips, write_planted_dataset
from jobs.audit import AuditConfig, audit
from storage.audits import AUDIT_FILE, unacted_audit_flags
from storage.datasets import open_dataset, verify_dataset
from storage.objectstore import ObjectStore
from vidgen.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """(local URI, poisoned keys): 160 clips from 8 clean sources and 8 (5%) from the poisoner."""
    uri = str(tmp_path_factory.mktemp("planted") / "data")
    return uri, write_planted_dataset(ObjectStore(), uri, planted_clips(168, 8, 8 / 168, seed=0))


def test_audit_finds_the_planted_trigger_from_s3_into_s3(ray_cluster, s3_config, planted):
    store = ObjectStore(s3_config)
    uri, report_uri = f"s3://in-{uuid.uuid4().hex[:10]}/data", f"s3://out-{uuid.uuid4().hex[:10]}/report"
    poisoned = write_planted_dataset(store, uri, planted_clips(168, 8, 8 / 168, seed=0))
    summary = audit(AuditConfig(uri=uri, out=report_uri, s3=s3_config))
    assert summary["clips"] == 168
    top = summary["suspected_triggers"][0]
    assert top["token"] == TRIGGER and top["clips"] == 8 and top["sources"] == {POISONER: 8}
    assert set(top["examples"]) == set(poisoned)
    assert top["coherence"] >= 3.0 and top["concentration"] == 1.0
    assert [t["token"] for t in summary["suspected_triggers"]] == [TRIGGER]
    assert [s["source"] for s in summary["suspected_sources"]] == [POISONER]
    assert set(summary["per_source"]) == {POISONER} | {f"uploader-{i:02d}" for i in range(8)}
    assert summary["per_licence"] == {"cc0-1.0": {"clips": 168, "sources": 9}}
    written = {o.uri.rpartition("/")[2] for o in store.list(report_uri)}
    assert written == {AUDIT_FILE, "audit.md", f"trigger-{TRIGGER}.png", f"source-{POISONER}.png"}
    assert store.read(f"{report_uri}/trigger-{TRIGGER}.png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(store.read(f"{report_uri}/{AUDIT_FILE}"))["suspected_triggers"][0]["token"] == TRIGGER


def test_cli_audit_exit_codes_filter_and_unacted_flags(ray_cluster, planted, tmp_path):
    uri, poisoned = planted
    clean = str(tmp_path / "clean")
    write_planted_dataset(ObjectStore(), clean, planted_clips(120, 8, 0.0, seed=1))
    runner = CliRunner()
    result = runner.invoke(app, ["data", "audit", clean, "--json", "--frame-features"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["suspected_triggers"] == [], result.stdout[:600]

    result = runner.invoke(app, ["data", "audit", uri, "--json"])
    assert result.exit_code == 3, result.output
    flagged = json.loads(result.stdout)
    assert flagged["suspected_triggers"][0]["token"] == TRIGGER
    assert [s["source"] for s in flagged["suspected_sources"]] == [POISONER]
    assert len(unacted_audit_flags(uri)) == 2  # the trigger and the source, kept in URI/audit/audit.json

    out = str(tmp_path / "filtered")
    result = runner.invoke(app, ["data", "filter", uri, "--drop-token", TRIGGER, "--out", out])
    assert result.exit_code == 0, result.output
    assert runner.invoke(app, ["data", "verify", out]).exit_code == 0
    dataset = open_dataset(ObjectStore(), out)
    assert dataset.index.num_samples == 160 and verify_dataset(ObjectStore(), out) == []
    filtered = dataset.card["filtered"]
    assert filtered["dropped_tokens"] == [TRIGGER] and filtered["dropped_clips"] == 8
    assert filtered["dropped_by_reason"] == {f"token {TRIGGER}": 8}
    assert filtered["audit"]["tokens"][TRIGGER]["clips"] == 8
    kept = {s.key for shard in dataset.index.shards for s in shard.samples}
    assert not kept & set(poisoned)
    assert unacted_audit_flags(out) == []  # the filtered data set was not audited: nothing to act on
