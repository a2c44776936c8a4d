"""A replica's automatic rollback and its following of an alias, without Ray: the rollback goes to the newest
version that passed the gate (never back to the bad one), names the tier and replica, happens at most once per
interval per alias; a follower that cannot load a version backs off instead of re-hashing it every poll; a tier
following @latest cannot switch rollback on."""

import pytest
from pydantic import ValidationError

from cluster.alias_following import FollowFailures, roll_back_alias
from cluster.serve_config import TierConfig
from storage.aliases import history, move_alias
from storage.registry import push
from tests.storage.test_registry import _package

BY = "vidgen serving: tier cloud, replica r1"


@pytest.fixture
def model(tmp_path):
    """ROOT/shapes with v1..v4 (tiny stand-in packages: only the alias records matter here)."""
    uri = f"{tmp_path}/root/shapes"
    for i in range(4):
        push(_package(tmp_path / f"p{i}", f"weights {i}".encode()), uri)
    return uri


def test_rolling_back_twice_never_brings_the_bad_version_back(model):
    move_alias(model, "canary", "v1", "release", passed_gate=True)
    move_alias(model, "canary", "v2", "release", passed_gate=True)
    assert roll_back_alias(f"{model}@canary", "shapes@v2#abc", "v2 regressed", BY, 0) == "v1"
    # the reproduction went v2 -> v1 -> v2; v1 regressing now has nowhere gated to go
    assert roll_back_alias(f"{model}@canary", "shapes@v1#def", "v1 regressed", BY, 0) is None
    records = history(model, "canary")
    assert [(r.version, r.kind, r.by) for r in records[2:]] == [("v1", "automatic-rollback", BY)]


def test_automatic_rollbacks_of_an_alias_are_rate_limited(model):
    for version in ("v1", "v2", "v3"):
        move_alias(model, "canary", version, "release", passed_gate=True)
    moved_at = history(model, "canary")[-1].at
    assert roll_back_alias(f"{model}@canary", "shapes@v3#a", "regressed", BY, 3600, now=moved_at) == "v2"
    at = history(model, "canary")[-1].at
    # another replica (or tier) seeing v2 regress a minute later changes nothing; an hour later it may
    assert roll_back_alias(f"{model}@canary", "shapes@v2#b", "regressed", BY, 3600, now=at + 60) is None
    assert history(model, "canary")[-1].version == "v2"
    assert roll_back_alias(f"{model}@canary", "shapes@v2#b", "regressed", BY, 3600, now=at + 3601) == "v1"


def test_a_rollback_of_a_version_no_longer_served_changes_nothing(model):
    move_alias(model, "canary", "v1", "release", passed_gate=True)
    move_alias(model, "canary", "v2", "release", passed_gate=True)
    move_alias(model, "canary", "v3", "a person moved it", passed_gate=True)
    assert roll_back_alias(f"{model}@canary", "shapes@v2#a", "stale probe", BY, 0) is None
    assert history(model, "canary")[-1].version == "v3"


def test_a_follower_backs_off_a_version_it_cannot_load_and_reports_it():
    failures = FollowFailures(poll_s=10, cap_s=300)
    assert failures.should_load("v3", 0) and failures.report() is None
    waits = [failures.failed("v3", "ModelFileError: model.safetensors does not match", now=0) for _ in range(7)]
    assert waits == [20, 40, 80, 160, 300, 300, 300]  # doubling, capped: not a full re-hash every 10 s poll
    assert not failures.should_load("v3", 299) and failures.should_load("v3", 300)
    assert failures.should_load("v4", 1)  # the alias moved on: the new version is tried at once
    assert failures.report() == "cannot load v3 (7 tries): ModelFileError: model.safetensors does not match"
    assert failures.failed("v4", "OSError: disk full", now=0) == 20  # a new version starts over
    failures.loaded()
    assert failures.report() is None and failures.should_load("v4", 0)


def test_a_tier_following_latest_cannot_roll_back():
    probe = {"rollback": True}
    with pytest.raises(ValidationError, match=r"quality_probe.rollback is on but model 'shapes@latest' follows "
                                              r"@latest.*name an alias"):
        TierConfig(model="shapes@latest", cost_per_clip=1, quality_probe=probe)
    tier = TierConfig(model="shapes@production", cost_per_clip=1, quality_probe=probe)
    assert tier.quality_probe.rollback and tier.quality_probe.min_rollback_interval_s == 3600
    assert TierConfig(model="shapes@latest", cost_per_clip=1, quality_probe={"rollback": False})
