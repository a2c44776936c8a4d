"""Alias records say whether their version passed the promotion gate (records written before that field parse, and
say so from their evaluation), a rollback goes only to such a version and never back to one rolled back from, and
a record names who moved the alias as the OS knows them, not as the caller's environment says."""

import json
import os
import pwd

import pytest

from storage.aliases import AliasRecord, history, move_alias, os_user, rollback_target
from storage.objectstore import ObjectStore
from storage.registry import push
from tests.storage.test_registry import _package


def _record(revision, version, previous, kind="promote", passed_gate=False):
    return AliasRecord("production", version, previous, "ci", "", float(revision), revision, {}, kind, passed_gate)


def test_records_written_before_passed_gate_existed_still_parse(tmp_path):
    folder = tmp_path / "root" / "shapes" / "aliases" / "production"
    folder.mkdir(parents=True)
    gated = {"candidate": {"version": "v1", "prompt_accuracy": {"seen": 0.9}}, "problems": [], "forced": False}
    forced = {"candidate": {"version": "v2", "prompt_accuracy": {"seen": 0.1}}, "forced": True,
              "problems": ["prompt accuracy on seen 0.1 < 0.9 - 0.05"]}
    speed_only = {"candidate": {"version": "v4", "seconds_per_clip": 1.0}, "problems": [], "forced": False}
    old = [("v1", None, "promote", gated), ("v2", "v1", "promote", forced), ("v1", "v2", "rollback", {}),
           ("v3", "v1", "promote", {}),  # a plain move_alias, no evaluation
           ("v4", "v3", "promote", speed_only)]  # a diffusers model the old gate let through on speed alone
    for revision, (version, previous, kind, evaluation) in enumerate(old, 1):
        (folder / f"r{revision:06d}.json").write_text(json.dumps(
            {"alias": "production", "version": version, "previous": previous, "by": "ci", "reason": "", "at": 1.0,
             "revision": revision, "evaluation": evaluation, "kind": kind}))
    records = history(str(tmp_path / "root" / "shapes"), "production", ObjectStore())
    assert [(r.version, r.passed_gate) for r in records] == [("v1", True), ("v2", False), ("v1", False),
                                                              ("v3", False), ("v4", False)]
    assert rollback_target(records) == "v1"


@pytest.mark.parametrize(("moves", "target"), [
    # the reproduction: v2 -> v1 by a rollback; a second rollback must not go back to v2
    ([("v1", None, "promote", True), ("v2", "v1", "promote", True), ("v1", "v2", "automatic-rollback", False)], None),
    # a forced (or plain) move never becomes a rollback target
    ([("v1", None, "promote", True), ("v2", "v1", "promote", False), ("v3", "v2", "promote", False)], "v1"),
    # rolling back walks down the gated versions, skipping each one rolled back from
    ([("v1", None, "promote", True), ("v2", "v1", "promote", True), ("v3", "v2", "promote", True),
      ("v2", "v3", "rollback", False)], "v1"),
    # a version promoted through the gate again after a rollback is a target again
    ([("v1", None, "promote", True), ("v2", "v1", "promote", True), ("v1", "v2", "rollback", False),
      ("v2", "v1", "promote", True), ("v3", "v2", "promote", False)], "v2"),
    ([("v1", None, "promote", True)], None),  # nothing else to go to
    ([], None),
])
def test_a_rollback_goes_to_the_newest_gated_version_not_rolled_back_from(moves, target):
    records = [_record(i, *move) for i, move in enumerate(moves, 1)]
    assert rollback_target(records) == target


def test_a_record_names_the_os_account_not_the_callers_environment(tmp_path, monkeypatch):
    push(_package(tmp_path / "p"), f"{tmp_path}/root/shapes")
    monkeypatch.setenv("USER", "mallory")
    monkeypatch.setenv("LOGNAME", "mallory")
    monkeypatch.setenv("USERNAME", "mallory")
    record = move_alias(f"{tmp_path}/root/shapes", "production", "v1", "release")
    assert record.by == pwd.getpwuid(os.geteuid()).pw_name == os_user() != "mallory"
    assert history(f"{tmp_path}/root/shapes", "production")[0].by == record.by
