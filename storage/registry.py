"""Versioned model packages in object storage: push, pull, list, and `NAME@VERSION` / `NAME@latest` references.

Layout under a registry root (a local folder or `s3://BUCKET/PREFIX`; default `$VIDGEN_REGISTRY` or
`~/.vidgen/registry`):

    ROOT/NAME/v1/{config.json, model.safetensors, card.md, ..., SHA256SUMS}   a vidgen package
    ROOT/NAME/v1/{model_index.json, vae/..., transformer/..., card.md, SHA256SUMS}   a diffusers one
    ROOT/NAME/v2/...

A push claims the next version number with a conditional write of `vN/.claim` (two pushers never get the
same number), uploads the files, and writes `SHA256SUMS` last: a version without it is invisible to `list`,
`latest` and `pull`. Aliases (`NAME@production`, `storage.aliases`) name a version and move by
compare-and-swap under `ROOT/NAME/aliases/`. A pull downloads into a cache folder, checks every file
against `SHA256SUMS`, and only then moves it into place; a cached copy is re-verified each time it is used. The
cache is keyed by where the version came from and by its content (`CACHE/NAME/VERSION-<digest of the registry
URI and SHA256SUMS>`), so `shapes@v1` from one registry never answers for `shapes@v1` from another.

References: `NAME@v2`, `NAME@latest`, `NAME@ALIAS`, `NAME` (= latest), `registry://NAME@v2` (in the default
root), or a full URI with a version, `s3://bucket/models/NAME@latest`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage.aliases import ALIAS_NAME, current
from storage.objectstore import AlreadyExists, Location, ObjectStore, StorageError, parse_uri
from storage.package import SUMS_FILE, ModelFileError, VerifiedFolder, format_sums, parse_sums, verify_package
from storage.user_state import model_cache, registry_root

log = logging.getLogger(__name__)
CLAIM_FILE = ".claim"
VERSION = re.compile(r"^v([1-9][0-9]*)$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ModelRef:
    """A model in a registry: `model_uri` is ROOT/NAME; `version` is `vN` or `latest`."""

    model_uri: Location
    version: str

    @property
    def name(self) -> str:
        return self.model_uri.name


def check_name(name: str) -> str:
    """A model name as it may appear in a registry: letters, digits, `.`, `_`, `-`; no separators, no `..`."""
    if not NAME.match(name) or ".." in name:
        raise StorageError(f"{name!r} is not a model name: use letters, digits, '.', '_' and '-' (e.g. shapes), "
                           "with no '/' and no '..'")
    return name


def model_location(root: str | Location, name: str) -> Location:
    """ROOT/NAME, refusing a name that would leave the root."""
    return parse_uri(root).join(check_name(name))


def parse_ref(ref: str, root: str | None = None) -> ModelRef:
    """`NAME[@VERSION]`, `registry://NAME[@VERSION]` or `URI/NAME[@VERSION]`; VERSION is `vN` or `latest`."""
    text = ref.removeprefix("registry://")
    body, _, version = text.rpartition("@") if "@" in text else (text, "", "latest")
    if version != "latest" and not VERSION.match(version) and not ALIAS_NAME.match(version):
        raise StorageError(f"model reference {ref!r} has version {version!r}: use vN (e.g. v3), latest or an "
                           "alias (e.g. production)")
    if "://" in body or "/" in body:  # a registry given by URI or path, ending in the model's name
        if ".." in body.split("/"):
            raise StorageError(f"model reference {ref!r} has a '..' in its path: give the model's own URI")
        model_uri = parse_uri(body)
        check_name(model_uri.name)
    else:
        model_uri = model_location(root or registry_root(), body)
    return ModelRef(model_uri, version)


def _version_number(version: str) -> int:
    return int(VERSION.match(version).group(1))


def list_versions(model_uri: str | Location, store: ObjectStore | None = None) -> list[str]:
    """The complete versions (those with SHA256SUMS) of the model at ROOT/NAME, oldest first."""
    store = store or ObjectStore()
    loc = parse_uri(model_uri)
    complete = set()
    prefix = loc.uri.rstrip("/") + "/"
    for obj in store.list(loc):
        parts = obj.uri.removeprefix(prefix).split("/")
        if len(parts) == 2 and VERSION.match(parts[0]) and parts[1] == SUMS_FILE:
            complete.add(parts[0])
    return sorted(complete, key=_version_number)


def list_models(root: str | None = None, store: ObjectStore | None = None) -> dict[str, list[str]]:
    """{name: complete versions} for every model under a registry root."""
    store = store or ObjectStore()
    loc = parse_uri(root or registry_root())
    prefix = loc.uri.rstrip("/") + "/"
    found: dict[str, set[str]] = {}
    for obj in store.list(loc):
        parts = obj.uri.removeprefix(prefix).split("/")
        if len(parts) == 3 and VERSION.match(parts[1]) and parts[2] == SUMS_FILE:
            found.setdefault(parts[0], set()).add(parts[1])
    return {name: sorted(v, key=_version_number) for name, v in sorted(found.items())}


def resolve(ref: str | ModelRef, root: str | None = None, store: ObjectStore | None = None) -> ModelRef:
    """A reference with `latest` replaced by the newest complete version; StorageError if there is none."""
    ref = parse_ref(ref, root) if isinstance(ref, str) else ref
    versions = list_versions(ref.model_uri, store)
    if not versions:
        raise StorageError(f"no versions of model {ref.name!r} at {ref.model_uri.uri}: push one with "
                           f"`vidgen models push MODEL {ref.name} --root {ref.model_uri.uri.rpartition('/')[0]}`")
    if ref.version == "latest":
        return ModelRef(ref.model_uri, versions[-1])
    if not VERSION.match(ref.version):  # an alias
        record = current(ref.model_uri, ref.version, store)
        if record is None:
            raise StorageError(f"model {ref.name!r} has no alias {ref.version!r} at {ref.model_uri.uri}; set it with "
                               f"`vidgen models promote {ref.name}@vN --to {ref.version}`")
        if record.version not in versions:
            raise StorageError(f"alias {ref.name}@{ref.version} names {record.version}, which is not a complete "
                               f"version at {ref.model_uri.uri}")
        return ModelRef(ref.model_uri, record.version)
    if ref.version not in versions:
        raise StorageError(f"model {ref.name!r} has no version {ref.version} at {ref.model_uri.uri}; it has "
                           f"{', '.join(versions)}")
    return ref


def push(local_dir: str | Path, model_uri: str, store: ObjectStore | None = None) -> str:
    """Upload a verified model package as the next version of the model at ROOT/NAME; returns the version."""
    store = store or ObjectStore()
    local_dir = Path(local_dir)
    sums = verify_package(local_dir)  # never publish a package that does not match its own sums
    loc = parse_uri(model_uri)
    check_name(loc.name)
    store.ensure_bucket(loc)
    existing = list_versions(loc, store)
    number = _version_number(existing[-1]) + 1 if existing else 1
    while True:  # claim a number; on a lost race take the next one
        version = f"v{number}"
        try:
            store.write(loc.join(version, CLAIM_FILE), b"", if_absent=True)
            break
        except AlreadyExists:
            number += 1
    upload_package(local_dir, loc.join(version), sums, store)
    log.debug("pushed %s as %s/%s", local_dir, loc.uri, version)  # callers say where it went, once
    return version


def upload_package(local_dir: Path, uri: str | Location, sums: dict[str, str], store: ObjectStore) -> None:
    """Copy the files in `sums` to `uri`, then SHA256SUMS last: readers see the package only once it is whole."""
    loc = parse_uri(uri)
    for name in sorted(sums):
        store.copy_from_local(Path(local_dir) / name, loc.join(name))
    store.write(loc.join(SUMS_FILE), format_sums(sums).encode())


def pull(ref: str | ModelRef, root: str | None = None, store: ObjectStore | None = None,
         cache_dir: Path | None = None) -> Path:
    """Download a model version into the cache (if not there already), verify every file, return its folder."""
    return pull_verified(ref, root, store, cache_dir).folder


def pull_verified(ref: str | ModelRef, root: str | None = None, store: ObjectStore | None = None,
                  cache_dir: Path | None = None) -> VerifiedFolder:
    """`pull`, returning the verified folder with its sums, so loading it does not hash it again."""
    store = store or ObjectStore()
    ref = resolve(ref, root, store)
    remote = ref.model_uri.join(ref.version)
    sums_text = store.read(remote.join(SUMS_FILE)).decode()
    sums = parse_sums(sums_text, remote.join(SUMS_FILE).uri, allow_paths=True)
    key = hashlib.sha256(f"{remote.uri}\n{sums_text}".encode()).hexdigest()[:16]
    dest = (cache_dir or model_cache()) / ref.name / f"{ref.version}-{key}"
    if dest.is_dir():
        # a cached copy is trusted only while it matches the registry's own list (not merely the copy's list)
        if verify_package(dest) != sums:
            raise ModelFileError(f"the cached copy {dest} does not match {remote.uri}'s SHA256SUMS: it was changed "
                                 "after it was pulled; delete the folder and pull again")
        return VerifiedFolder(dest, sums)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for name in sums:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            store.copy_to_local(remote.join(name), tmp / name)
        (tmp / SUMS_FILE).write_text(format_sums(sums))
        try:
            verify_package(tmp)
        except ModelFileError as e:
            raise ModelFileError(f"{remote.uri} failed verification after download ({e}); the stored copy is "
                                 "damaged or was tampered with: push the model again") from e
        try:
            tmp.rename(dest)
        except OSError:  # another process finished the same pull first
            verify_package(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return VerifiedFolder(dest, sums)


def cached_version(folder: Path) -> tuple[str, str]:
    """(NAME, VERSION) of a folder `pull` returned."""
    return folder.parent.name, folder.name.split("-")[0]
