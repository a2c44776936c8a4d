"""Artifacts derived from a model, kept in the model cache: read back only while this machine's HMAC vouches for
them; anything else is removed and reported as absent, so the caller computes it again."""

import shutil

import pytest

from storage.derived import derived_folder, read_derived, write_derived
from storage.package import SUMS_FILE, sha256_bytes

DIGEST = "ab" * 32
KEY = {"encoder": "cd" * 32, "frames": 8}


@pytest.fixture(autouse=True)
def _machine(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDGEN_RUNS_SECRET", "this machine")
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))


def test_written_once_read_back_under_the_model_cache(tmp_path):
    assert read_derived(DIGEST, "drift", KEY) is None
    folder = write_derived(DIGEST, "drift", KEY, {"a.bin": b"\x00\x01"})
    assert folder.is_relative_to(tmp_path / "cache" / "_derived" / DIGEST[:16])
    assert read_derived(DIGEST, "drift", KEY) == {"a.bin": b"\x00\x01"}
    assert read_derived(DIGEST, "drift", {**KEY, "frames": 16}) is None  # another key: another folder
    assert read_derived("ef" * 32, "drift", KEY) is None


def test_a_changed_file_with_rewritten_sums_is_refused_and_removed(caplog):
    folder = write_derived(DIGEST, "drift", KEY, {"a.bin": b"genuine"})
    (folder / "a.bin").write_bytes(b"forged")
    sums = (folder / SUMS_FILE).read_text().replace(sha256_bytes(b"genuine"), sha256_bytes(b"forged"))
    (folder / SUMS_FILE).write_text(sums)  # whoever writes the cache can rewrite the sums, not their HMAC
    assert read_derived(DIGEST, "drift", KEY) is None
    assert not folder.exists()
    assert "does not authenticate" in caplog.text
    write_derived(DIGEST, "drift", KEY, {"a.bin": b"genuine"})
    assert read_derived(DIGEST, "drift", KEY) == {"a.bin": b"genuine"}


def test_a_changed_file_an_added_file_and_another_machines_folder_are_refused(monkeypatch):
    folder = write_derived(DIGEST, "drift", KEY, {"a.bin": b"genuine"})
    (folder / "a.bin").write_bytes(b"damaged")
    assert read_derived(DIGEST, "drift", KEY) is None

    folder = write_derived(DIGEST, "drift", KEY, {"a.bin": b"genuine"})
    (folder / "extra.bin").write_bytes(b"")
    assert read_derived(DIGEST, "drift", KEY) is None

    folder = write_derived(DIGEST, "drift", KEY, {"a.bin": b"genuine"})
    monkeypatch.setenv("VIDGEN_RUNS_SECRET", "another machine")
    assert read_derived(DIGEST, "drift", KEY) is None


def test_a_folder_moved_to_another_key_is_refused():
    source = write_derived(DIGEST, "drift", KEY, {"a.bin": b"for frames 8"})
    other = {**KEY, "frames": 16}
    target = derived_folder(DIGEST, "drift", other)
    shutil.copytree(source, target)
    assert read_derived(DIGEST, "drift", other) is None  # the HMAC names the folder it was written as
    assert read_derived(DIGEST, "drift", KEY) == {"a.bin": b"for frames 8"}
