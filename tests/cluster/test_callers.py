"""API keys from a keys file (read again when it changes, a broken edit keeping the keys before) and each caller's
limits: a token bucket of creates per minute whose refusal says when to retry, and a cap on renders at once."""

import hashlib
import os

import pytest

from cluster.callers import CallerAdmission, CallerLimits, KeysFileCallers, read_keys_file, retry_headers


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def write_keys(path, text: str) -> None:
    """Replace the file as the kubelet updates a mounted Secret: a new file swapped in, not one edited in place."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_each_token_is_its_own_caller_with_its_own_limits(tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, f"""
default_limits: {{creates_per_minute: 30}}
keys:
  alice: {{token_sha256: {sha('alice-token')}}}
  batch: {{token_sha256: {sha('batch-token')}, limits: {{max_concurrent_renders: 16}}}}
""")
    callers = KeysFileCallers(keys)
    assert callers.identify("alice-token") == "alice" and callers.identify("batch-token") == "batch"
    assert callers.identify("wrong") is None and callers.identify(None) is None and callers.identify("") is None
    assert callers.limits_of("alice") == CallerLimits(creates_per_minute=30)
    assert callers.limits_of("batch") == CallerLimits(max_concurrent_renders=16)


def test_a_changed_keys_file_is_read_again_and_a_broken_one_keeps_the_keys_before(tmp_path):
    keys = tmp_path / "keys.yaml"
    write_keys(keys, f"keys: {{alice: {{token_sha256: {sha('a1')}}}}}\n")
    callers = KeysFileCallers(keys, reload_every_s=0)
    write_keys(keys, f"keys: {{alice: {{token_sha256: {sha('a2')}}}, bob: {{token_sha256: {sha('b')}}}}}\n")
    assert callers.identify("a1") is None  # rotated: the old token is revoked without a restart
    assert callers.identify("a2") == "alice" and callers.identify("b") == "bob"
    write_keys(keys, "keys: {bob: {token_sha256: not-a-digest}}\n")
    assert callers.identify("b") == "bob"  # the broken edit is logged, the keys read before still serve


@pytest.mark.parametrize(("text", "names"), [
    ("keys: {}", "keys"),
    (f"keys: {{a: {{token_sha256: {sha('x')}}}, b: {{token_sha256: {sha('x')}}}}}", "same token_sha256"),
    (f"keys: {{a: {{token_sha256: {sha('x')}, limits: {{rate: 3}}}}}}", "keys.a.limits.rate"),
    (f"keys: {{'a b': {{token_sha256: {sha('x')}}}}}", "keys.a b"),
])
def test_a_wrong_keys_file_is_refused_naming_the_field(tmp_path, text, names):
    keys = tmp_path / "keys.yaml"
    keys.write_text(text)
    with pytest.raises(ValueError, match=f"keys file {keys}: .*{names}"):
        read_keys_file(keys)


def test_the_create_rate_is_a_bucket_whose_refusal_says_when_a_create_fits_again():
    admission, limits = CallerAdmission(), CallerLimits(creates_per_minute=6, burst=2)  # one token every 10 s
    assert admission.admit("alice", limits, now=0) is None and admission.admit("alice", limits, now=0) is None
    refused = admission.admit("alice", limits, now=1)
    assert refused.code == "rate_limit_exceeded" and refused.retry_after_s == pytest.approx(9)
    assert retry_headers(refused.retry_after_s) == {"Retry-After": "9", "retry-after-ms": "9000"}
    assert admission.admit("bob", limits, now=1) is None  # another caller has its own bucket
    assert admission.admit("alice", limits, now=10) is None  # a token refilled, exactly when it was told
    assert admission.admit("alice", limits, now=10).retry_after_s == pytest.approx(10)


def test_renders_at_once_are_capped_per_caller_and_a_slot_frees_when_a_render_ends():
    admission, limits = CallerAdmission(), CallerLimits(max_concurrent_renders=2)
    assert admission.admit("alice", limits) is None and admission.admit("alice", limits) is None
    refused = admission.admit("alice", limits, soonest_free_s=lambda: 3.5)
    assert refused.code == "concurrency_limit_exceeded" and refused.retry_after_s == 3.5
    assert "max_concurrent_renders 2" in refused.message
    assert admission.admit("bob", limits) is None
    admission.ended("alice")
    assert admission.admit("alice", limits) is None
    assert retry_headers(None) == {}  # no estimate to give: no Retry-After


def test_a_refused_create_takes_no_token_and_no_slot():
    admission = CallerAdmission()
    both = CallerLimits(creates_per_minute=60, burst=1, max_concurrent_renders=1)
    assert admission.admit("alice", both, now=0) is None
    assert admission.admit("alice", both, now=5).code == "concurrency_limit_exceeded"  # the bucket is untouched
    admission.ended("alice")
    assert admission.admit("alice", both, now=5) is None  # the token refilled meanwhile is still there
    assert admission.active["alice"] == 1
