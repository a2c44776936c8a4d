"""Training checkpoints whose files are hashed and authenticated when written, and verified before anything reads
them.

A distributed checkpoint is one folder into which every rank writes its own files (DeepSpeed's ZeRO shards and
optimizer states are pickles: loading a tampered one runs code). Each rank lists the files it wrote, with their
sha256, in `SHA256SUMS.rank<R>`, and authenticates that list with an HMAC under the run's secret key
(`SHA256SUMS.rank<R>.hmac`). The HMAC also covers which run, which checkpoint folder (named by its step) and which
rank of how many the list belongs to (`CheckpointId`), so lists of two checkpoints cannot be mixed and an older
checkpoint's files cannot stand in for a newer one's.

The key never travels through Ray (whose dashboard and state API show every runtime_env): the driver and every
worker derive it from the runs secret of their own machine (`run_key`: $VIDGEN_RUNS_SECRET, set on every node at
`ray start` like the nodes' S3 credentials, or ~/.vidgen/runs-secret on a single machine). Whoever can write RUNS
can change files but cannot make a list that verifies.

`load_verified` copies a checkpoint into a private folder first, then checks that every file there is listed by
exactly one rank and matches, that all ranks are there, and that nothing is a link (a symlinked folder would hide
its files from the check, a hard link could change after it), and only then lets the loader read the copy: nothing
can be swapped between the check and the load.
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
from dataclasses import dataclass
from pathlib import Path

from storage.package import ModelFileError, format_sums, parse_sums, sha256_file
from storage.user_state import runs_secret_file

SUMS_PREFIX = "SHA256SUMS.rank"
MAC_SUFFIX = ".hmac"
RUNS_SECRET_ENV = "VIDGEN_RUNS_SECRET"
CHECKPOINT_PREFIX = "checkpoint_step"


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete, unauthenticated, or whose files do not match their hashes."""


class RunKeyError(CheckpointError):
    """No runs secret on this machine to derive a run's key from."""


@dataclass(frozen=True)
class CheckpointId:
    """What a rank's hash list is the list of: bound into its HMAC, so the list verifies nowhere else."""

    run: str
    step: int
    world_size: int

    @property
    def folder_name(self) -> str:
        """The checkpoint's folder in the run (`ray.train.report(checkpoint_dir_name=...)`): named by its step."""
        return f"{CHECKPOINT_PREFIX}{self.step:08d}"

    @classmethod
    def of_folder(cls, run: str, folder_name: str, world_size: int) -> CheckpointId:
        """The identity a checkpoint folder claims by its name; CheckpointError for a name vidgen never writes."""
        digits = folder_name.removeprefix(CHECKPOINT_PREFIX)
        if not folder_name.startswith(CHECKPOINT_PREFIX) or not digits.isdigit():
            raise CheckpointError(f"checkpoint folder {folder_name!r} is not one this vidgen writes "
                                  f"({CHECKPOINT_PREFIX}<step>): it was made by an older vidgen or by someone else")
        return cls(run, int(digits), world_size)

    def context(self, rank: int) -> bytes:
        return (f"vidgen checkpoint\nrun {self.run}\nfolder {self.folder_name}\n"
                f"rank {rank} of {self.world_size}\n").encode()


def new_key() -> bytes:
    return secrets.token_bytes(32)


def _runs_secret(create: bool) -> bytes:
    if os.environ.get(RUNS_SECRET_ENV):
        return os.environ[RUNS_SECRET_ENV].strip().encode()
    path = runs_secret_file()
    if path.is_file():
        return path.read_bytes().strip()
    if not create:
        raise RunKeyError(f"no runs secret on this machine: set {RUNS_SECRET_ENV} (on a cluster, on every node at "
                          f"`ray start`, the same value as where runs are started) or keep {path} from the machine "
                          "that started the run")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another run made it a moment ago
        return path.read_bytes().strip()
    with os.fdopen(descriptor, "w") as f:
        f.write(new_key().hex())
    return path.read_bytes().strip()


def run_key(runs_uri: str, name: str, create_secret: bool = False) -> bytes:
    """The secret key of training run `name` under `runs_uri`, derived from this machine's runs secret; the driver
    (`create_secret=True` makes a secret on a machine that has none) and every worker derive the same key, so it
    never travels through Ray."""
    return hmac.new(_runs_secret(create_secret), f"vidgen run key\n{runs_uri}\n{name}".encode(),
                    hashlib.sha256).digest()


def machine_key(purpose: str) -> bytes:
    """A key for files this machine's own processes write and later trust (the model cache's derived artifacts,
    `storage.derived`), derived from the runs secret (made on a machine that has none): whoever can write the cache
    but cannot read the secret cannot forge them."""
    return hmac.new(_runs_secret(True), f"vidgen machine key\n{purpose}".encode(), hashlib.sha256).digest()


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


def write_rank_sums(folder: Path, rank: int, key: bytes, checkpoint: CheckpointId) -> None:
    """Record the sha256 of every file in `folder`, a rank's own staging folder, as that rank's hash list,
    authenticated for `checkpoint` alone."""
    folder = Path(folder)
    text = format_sums({name: sha256_file(folder / name) for name in _relative_files(folder)}).encode()
    (folder / f"{SUMS_PREFIX}{rank}").write_bytes(text)
    (folder / f"{SUMS_PREFIX}{rank}{MAC_SUFFIX}").write_text(mac(checkpoint.context(rank) + text, key) + "\n")


def read_rank_sums(read: Callable[[str], bytes], rank: int, key: bytes, checkpoint: CheckpointId,
                   where: str) -> dict[str, str]:
    """One rank's hash list, after its HMAC is checked for `checkpoint`; `read(name)` gives a file of the
    checkpoint's bytes."""
    try:
        text, presented = read(f"{SUMS_PREFIX}{rank}"), read(f"{SUMS_PREFIX}{rank}{MAC_SUFFIX}")
    except (FileNotFoundError, OSError):
        raise CheckpointError(f"checkpoint {where} has no authenticated hash list for rank {rank}: it is "
                              "incomplete, was written by another number of workers, or by an older vidgen") from None
    if not mac_matches(checkpoint.context(rank) + text, presented, key):
        raise CheckpointError(f"checkpoint {where}: the hash list of rank {rank} was not written for this "
                              f"checkpoint ({checkpoint.folder_name} of run {checkpoint.run}, {checkpoint.world_size} "
                              "ranks) by this run: its HMAC does not match; refusing to load it")
    try:
        return parse_sums(text.decode(), f"{where}/{SUMS_PREFIX}{rank}", allow_paths=True)
    except (ModelFileError, UnicodeDecodeError) as e:
        raise CheckpointError(str(e)) from e


def verify_checkpoint(folder: Path, checkpoint: CheckpointId, key: bytes) -> None:
    """Raise CheckpointError unless the folder holds exactly the files the ranks of `checkpoint` recorded and
    authenticated, unchanged, and no link of any kind."""
    folder, world_size = Path(folder), checkpoint.world_size
    present = _relative_files(folder)
    ranks = sorted(int(p.name.removeprefix(SUMS_PREFIX)) for p in folder.glob(f"{SUMS_PREFIX}*")
                   if p.name.removeprefix(SUMS_PREFIX).isdigit())
    if ranks != list(range(world_size)):
        raise CheckpointError(f"checkpoint {folder} has hash lists for ranks {ranks}, expected 0..{world_size - 1}: "
                              "it is incomplete or was written by a run with another number of workers")
    listed: dict[str, str] = {}
    for rank in ranks:
        for name, digest in read_rank_sums(lambda n: (folder / n).read_bytes(), rank, key, checkpoint,
                                           str(folder)).items():
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
def load_verified(copy_into: Callable[[Path], None], checkpoint: CheckpointId, key: bytes) -> Iterator[Path]:
    """A private, verified copy of a checkpoint to load from: `copy_into(folder)` fills a new temp folder (e.g.
    Ray's `checkpoint.to_directory`), the copy is verified, and the caller reads only the copy."""
    folder = Path(tempfile.mkdtemp(prefix="vidgen-checkpoint-"))
    try:
        os.chmod(folder, 0o700)
        copy_into(folder)
        verify_checkpoint(folder, checkpoint, key)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
