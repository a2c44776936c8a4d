"""Training checkpoints whose files are hashed and authenticated when written, and verified before anything reads
them.

A distributed checkpoint is one folder into which every rank writes its own files (DeepSpeed's ZeRO shards and
optimizer states are pickles: loading a tampered one runs code). Each rank lists the files it wrote, with their
sha256, in `SHA256SUMS.rank<R>`, and authenticates that list with an HMAC under the run's secret key
(`SHA256SUMS.rank<R>.hmac`). The key lives outside the runs store (`run_key`), so whoever can write RUNS can change
files but cannot make a list that verifies. `load_verified` copies a checkpoint into a private folder first, then
checks that every file there is listed by exactly one rank and matches, that all ranks are there, and that nothing
is a link (a symlinked folder would hide its files from the check, a hard link could change after it), and only
then lets the loader read the copy: nothing can be swapped between the check and the load.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.package import ModelFileError, format_sums, parse_sums, sha256_file

SUMS_PREFIX = "SHA256SUMS.rank"
MAC_SUFFIX = ".hmac"


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete, unauthenticated, or whose files do not match their hashes."""


def new_key() -> bytes:
    return secrets.token_bytes(32)


def mac(data: bytes, key: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def mac_matches(data: bytes, presented: bytes | str, key: bytes) -> bool:
    """Constant-time; whatever bytes a tampered file holds, the answer is False, never an exception."""
    if isinstance(presented, str):
        presented = presented.encode("utf-8", "replace")
    return hmac.compare_digest(mac(data, key).encode(), presented.strip())


def _walk(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative name, lstat) of everything below `folder`, links included and never followed."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in [*dirs, *files]:
            path = Path(root, name)
            yield str(path.relative_to(folder)), path.lstat()


def _relative_files(folder: Path) -> list[str]:
    """Every file below `folder` but the hash lists; CheckpointError for a link, a hard link or anything odd."""
    names = []
    for name, info in _walk(folder):
        if stat.S_ISLNK(info.st_mode):
            raise CheckpointError(f"checkpoint {folder}: {name} is a symbolic link; refusing to load it")
        if stat.S_ISDIR(info.st_mode):
            continue
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"checkpoint {folder}: {name} is not a regular file; refusing to load it")
        if info.st_nlink > 1:
            raise CheckpointError(f"checkpoint {folder}: {name} is a hard link; refusing to load it")
        if not (name.startswith(SUMS_PREFIX) and "/" not in name):  # the hash lists themselves, at the top only
            names.append(name)
    return sorted(names)


def write_rank_sums(folder: Path, rank: int, key: bytes) -> None:
    """Record the sha256 of every file in `folder`, a rank's own staging folder, as that rank's authenticated
    hash list."""
    folder = Path(folder)
    text = format_sums({name: sha256_file(folder / name) for name in _relative_files(folder)}).encode()
    (folder / f"{SUMS_PREFIX}{rank}").write_bytes(text)
    (folder / f"{SUMS_PREFIX}{rank}{MAC_SUFFIX}").write_text(mac(text, key) + "\n")


def read_rank_sums(read: Callable[[str], bytes], rank: int, key: bytes, where: str) -> dict[str, str]:
    """One rank's hash list, after its HMAC is checked; `read(name)` gives a file of the checkpoint's bytes."""
    try:
        text, presented = read(f"{SUMS_PREFIX}{rank}"), read(f"{SUMS_PREFIX}{rank}{MAC_SUFFIX}")
    except (FileNotFoundError, OSError):
        raise CheckpointError(f"checkpoint {where} has no authenticated hash list for rank {rank}: it is "
                              "incomplete, was written by another number of workers, or by an older vidgen") from None
    if not mac_matches(text, presented, key):
        raise CheckpointError(f"checkpoint {where}: the hash list of rank {rank} was not written by this run (its "
                              "HMAC does not match the run's key); refusing to load it")
    try:
        return parse_sums(text.decode(), f"{where}/{SUMS_PREFIX}{rank}", allow_paths=True)
    except (ModelFileError, UnicodeDecodeError) as e:
        raise CheckpointError(str(e)) from e


def verify_checkpoint(folder: Path, world_size: int, key: bytes) -> None:
    """Raise CheckpointError unless the folder holds exactly the files its ranks recorded and authenticated,
    unchanged, and no link of any kind."""
    folder = Path(folder)
    present = _relative_files(folder)
    ranks = sorted(int(p.name.removeprefix(SUMS_PREFIX)) for p in folder.glob(f"{SUMS_PREFIX}*")
                   if p.name.removeprefix(SUMS_PREFIX).isdigit())
    if ranks != list(range(world_size)):
        raise CheckpointError(f"checkpoint {folder} has hash lists for ranks {ranks}, expected 0..{world_size - 1}: "
                              "it is incomplete or was written by a run with another number of workers")
    listed: dict[str, str] = {}
    for rank in ranks:
        for name, digest in read_rank_sums(lambda n: (folder / n).read_bytes(), rank, key, str(folder)).items():
            if name in listed:
                raise CheckpointError(f"checkpoint {folder}: {name} is listed by more than one rank")
            listed[name] = digest
    unlisted = sorted(set(present) - set(listed))
    if unlisted:
        raise CheckpointError(f"checkpoint {folder} holds files no rank recorded: {unlisted}; refusing to load it")
    for name, digest in sorted(listed.items()):
        path = folder / name
        if name not in present:
            raise CheckpointError(f"checkpoint file {path} is listed but missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"checkpoint file {path} does not match the sha256 recorded when it was written: "
                                  "it was changed or damaged; refusing to load it (resume from an earlier "
                                  "checkpoint or start a new run)")


@contextmanager
def load_verified(copy_into: Callable[[Path], None], world_size: int, key: bytes) -> Iterator[Path]:
    """A private, verified copy of a checkpoint to load from: `copy_into(folder)` fills a new temp folder (e.g.
    Ray's `checkpoint.to_directory`), the copy is verified, and the caller reads only the copy."""
    folder = Path(tempfile.mkdtemp(prefix="vidgen-checkpoint-"))
    try:
        os.chmod(folder, 0o700)
        copy_into(folder)
        verify_checkpoint(folder, world_size, key)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
