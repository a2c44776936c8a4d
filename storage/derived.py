"""Artifacts derived from a model (e.g. a serving replica's prompt-drift reference), computed once and kept in the
model cache beside the models pulled there, so the next process on this machine reads them instead of computing.

    CACHE/_derived/MODEL_DIGEST[:16]/ARTIFACT-KEY_DIGEST[:16]/   ($VIDGEN_CACHE, else ~/.cache/vidgen/models)
        FILES...          the artifact's files (bytes: what they mean is the caller's)
        key.json          what the artifact is a pure function of (the model digest among it)
        SHA256SUMS        every other file's sha256
        SHA256SUMS.hmac   an HMAC of the folder's name and SHA256SUMS under this machine's key

`_derived` can never be a model's name in the cache (names begin with a letter or digit). The HMAC key is derived
from the machine's runs secret (`storage.training_checkpoints.machine_key`), so whoever can write the cache but not
read the secret cannot make a folder that verifies; a folder that does not verify (changed, truncated, moved to
another key) is removed and reported, and the caller computes the artifact again. A folder is written whole in a
temporary folder and renamed into place: readers never see half of one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from storage.package import SUMS_FILE, ModelFileError, format_sums, parse_sums, sha256_bytes
from storage.training_checkpoints import mac, mac_matches, machine_key
from storage.user_state import model_cache

log = logging.getLogger(__name__)
DERIVED_FOLDER, KEY_FILE, MAC_FILE = "_derived", "key.json", f"{SUMS_FILE}.hmac"
_MAC_PURPOSE = "model cache derived artifacts"


def derived_folder(model_digest: str, artifact: str, key: dict, cache_dir: Path | None = None) -> Path:
    """Where the artifact of a model under `key` (JSON-serialisable) lives in the cache."""
    key_digest = sha256_bytes(_key_bytes(model_digest, artifact, key))
    return (cache_dir or model_cache()) / DERIVED_FOLDER / model_digest[:16] / f"{artifact}-{key_digest[:16]}"


def _key_bytes(model_digest: str, artifact: str, key: dict) -> bytes:
    return json.dumps({"model_digest": model_digest, "artifact": artifact, **key}, sort_keys=True).encode()


def _signed(folder: Path, sums_text: str) -> bytes:
    return f"vidgen derived artifact\n{folder.parent.name}/{folder.name}\n{sums_text}".encode()


def read_derived(model_digest: str, artifact: str, key: dict, cache_dir: Path | None = None) -> dict[str, bytes] | None:
    """The artifact's files ({name: bytes}) if the cache holds them and they verify; None if absent. A folder that
    does not verify is removed (with a warning naming it), so the caller's next write replaces it."""
    folder = derived_folder(model_digest, artifact, key, cache_dir)
    if not folder.is_dir():
        return None
    secret = machine_key(_MAC_PURPOSE)  # outside the try: no secret to read says nothing against the folder
    try:
        return _verified_files(folder, _key_bytes(model_digest, artifact, key), secret)
    except (OSError, ModelFileError) as exc:
        log.warning("the cached %s at %s does not verify (%s): computing it again", artifact, folder, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None


def _verified_files(folder: Path, key_bytes: bytes, secret: bytes) -> dict[str, bytes]:
    sums_text = (folder / SUMS_FILE).read_text()
    if not mac_matches(_signed(folder, sums_text), (folder / MAC_FILE).read_bytes(), secret):
        raise ModelFileError(f"{folder / MAC_FILE} does not authenticate {SUMS_FILE}: written elsewhere or changed")
    sums = parse_sums(sums_text, str(folder / SUMS_FILE))
    present = {p.name for p in folder.iterdir()} - {SUMS_FILE, MAC_FILE}
    if present != set(sums):
        raise ModelFileError(f"{folder} holds {sorted(present)}, its {SUMS_FILE} lists {sorted(sums)}")
    files = {}
    for name, digest in sums.items():
        data = (folder / name).read_bytes()
        if sha256_bytes(data) != digest:
            raise ModelFileError(f"{folder / name} does not match its {SUMS_FILE} hash")
        files[name] = data
    if files.pop(KEY_FILE) != key_bytes:
        raise ModelFileError(f"{folder / KEY_FILE} names another key")
    return files


def write_derived(model_digest: str, artifact: str, key: dict, files: dict[str, bytes],
                  cache_dir: Path | None = None) -> Path:
    """Store the artifact's files (plain names) under its key, with their sums and HMAC; returns the folder. A folder
    another process finished first is left in place (the artifact is the same pure function of the same key)."""
    folder = derived_folder(model_digest, artifact, key, cache_dir)
    files = {**files, KEY_FILE: _key_bytes(model_digest, artifact, key)}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        sums_text = format_sums({name: sha256_bytes(data) for name, data in files.items()})
        (tmp / SUMS_FILE).write_text(sums_text)
        (tmp / MAC_FILE).write_text(mac(_signed(folder, sums_text), machine_key(_MAC_PURPOSE)))
        try:
            tmp.rename(folder)
        except OSError:  # another process stored it first
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
