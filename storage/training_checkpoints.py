"""Training checkpoints whose files are hashed when written and verified before anything reads them.

A distributed checkpoint is one folder into which every rank writes its own files (DeepSpeed's ZeRO shards
and optimizer states are pickles: loading a tampered one runs code). Each rank lists the files it wrote,
with their sha256, in `SHA256SUMS.rank<R>`; `verify_checkpoint` checks that every file in the folder is
listed by exactly one rank, that every listed file is present and matches, and that all ranks are there.
"""

from __future__ import annotations

from pathlib import Path

from storage.package import ModelFileError, format_sums, parse_sums, sha256_file

SUMS_PREFIX = "SHA256SUMS.rank"


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete or whose files do not match the hashes written with them."""


def _relative_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and not p.name.startswith(SUMS_PREFIX))


def write_rank_sums(folder: Path, rank: int) -> None:
    """Record the sha256 of every file in `folder`, a rank's own staging folder, as that rank's hash list."""
    folder = Path(folder)
    sums = {name: sha256_file(folder / name) for name in _relative_files(folder)}
    (folder / f"{SUMS_PREFIX}{rank}").write_text(format_sums(sums))


def verify_checkpoint(folder: Path, world_size: int) -> None:
    """Raise CheckpointError unless the folder holds exactly the files its ranks recorded, unchanged."""
    folder = Path(folder)
    sums_files = sorted(folder.glob(f"{SUMS_PREFIX}*"))
    ranks = sorted(int(p.name.removeprefix(SUMS_PREFIX)) for p in sums_files)
    if ranks != list(range(world_size)):
        raise CheckpointError(f"checkpoint {folder} has hash lists for ranks {ranks}, expected 0..{world_size - 1}: "
                              "it is incomplete or was written by a run with another number of workers")
    listed: dict[str, str] = {}
    for path in sums_files:
        try:
            rank_sums = parse_sums(path.read_text(), str(path), allow_paths=True)
        except ModelFileError as e:
            raise CheckpointError(str(e)) from e
        for name, digest in rank_sums.items():
            if name in listed:
                raise CheckpointError(f"checkpoint {folder}: {name} is listed by more than one rank")
            listed[name] = digest
    unlisted = sorted(set(_relative_files(folder)) - set(listed))
    if unlisted:
        raise CheckpointError(f"checkpoint {folder} holds files no rank recorded: {unlisted}; refusing to load it")
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"checkpoint file {path} is listed but missing")
        if sha256_file(path) != digest:
            raise CheckpointError(f"checkpoint file {path} does not match the sha256 recorded when it was written: "
                                  "it was changed or damaged; refusing to load it (resume from an earlier "
                                  "checkpoint or start a new run)")

