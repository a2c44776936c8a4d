"""The model package: a folder of files and its `SHA256SUMS`, in one of two kinds.

    vidgen      config.json + model.safetensors (+ card.md)
    diffusers   a diffusers pipeline folder: model_index.json + one subfolder per component (+ card.md)

`SHA256SUMS` (in `sha256sum -c` format) lists every other file under the folder by its relative path and is
written last, so a package whose sums file exists is complete; every file is checked against it before anything
is loaded, a missing, changed or unlisted file is refused by name, and pickled weights (`.bin`, `.pt`, ...) are
refused outright: loading a pickle runs code. A sharded-weights index (`*.index.json`) may name only .safetensors
files of the package: diffusers and transformers unpickle a shard of any other suffix.

A folder is read without following links, except a link to a regular file inside the folder itself or, for a
Hugging Face cache snapshot (`models--ORG--NAME/snapshots/REV`), into the same repo's blob store
(`models--ORG--NAME/blobs`): any other link is refused by path, so a link to `~/.aws/credentials` or
`/proc/self/environ` never reaches a package, its sums or a registry. Loaders read a `private_copy` of what was
verified, never the folder again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CONFIG_FILE, WEIGHTS_FILE, SUMS_FILE, CARD_FILE = "config.json", "model.safetensors", "SHA256SUMS", "card.md"
PIPELINE_INDEX = "model_index.json"
ADAPTER_FILE = "adapter.json"  # a LoRA adapter package: which base it adapts, and how (vidgen.pipelines.adapters)
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"  # the file diffusers' save_lora_weights writes and loads
REQUIRED = {"vidgen": (CONFIG_FILE, WEIGHTS_FILE), "diffusers": (PIPELINE_INDEX,),
            "adapter": (ADAPTER_FILE, LORA_WEIGHTS)}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
CONVERT_HINT = ("convert it to safetensors first, e.g. `python -c \"from diffusers import DiffusionPipeline; "
                "DiffusionPipeline.from_pretrained('IN').save_pretrained('OUT', safe_serialization=True)\"`")


class ModelFileError(ValueError):
    """A model package that is missing a file or whose contents do not match their recorded hashes."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def format_sums(sums: dict[str, str]) -> str:
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(sums.items()))


def parse_sums(text: str, where: str = SUMS_FILE, allow_paths: bool = False) -> dict[str, str]:
    """{file name: sha256} from `sha256sum` output; ModelFileError on a malformed line.

    Names are plain file names, or with `allow_paths` relative paths that stay inside the folder.
    """
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        parts = name.split("/")
        bad_name = "/" in name if not allow_paths else (name.startswith("/") or
                                                        any(not part or part.startswith(".") for part in parts))
        if not sep or len(digest) != 64 or not name or bad_name or parts[-1].startswith("."):
            raise ModelFileError(f"{where} line {number} is not '<sha256>  <file name>': {line[:80]!r}")
        sums[name] = digest
    return sums


def package_kind(folder: Path) -> str:
    """"diffusers" for a pipeline folder (it has model_index.json), "adapter" for a LoRA adapter (adapter.json),
    else "vidgen"."""
    if (Path(folder) / PIPELINE_INDEX).is_file():
        return "diffusers"
    return "adapter" if (Path(folder) / ADAPTER_FILE).is_file() else "vidgen"


def _hub_blob_store(root: Path) -> Path | None:
    """`models--ORG--NAME/blobs` when `root` (resolved) is a snapshot of that Hugging Face cache repo, else None."""
    snapshots = root.parent
    repo = snapshots.parent
    if snapshots.name == "snapshots" and repo.name.startswith("models--"):
        return repo / "blobs"
    return None


def _check_file(path: Path, root: Path, blobs: Path | None) -> None:
    """ModelFileError unless `path` is a regular file, or a link to one inside `root` or `blobs` (both resolved)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):
            raise ModelFileError(f"{path} is a broken link; remove it or copy the file in") from None
        inside = target.is_relative_to(root) or (blobs is not None and target.is_relative_to(blobs))
        if not inside:
            raise ModelFileError(f"{path} is a link to {target}, outside the folder (and its Hugging Face cache "
                                 "blob store): vidgen packages only the folder's own files; copy the file in or "
                                 "remove the link")
        info = target.stat()
    if not stat.S_ISREG(info.st_mode):
        raise ModelFileError(f"{path} is not a regular file; remove it from the model folder")


def open_package_file(folder: Path, name: str):
    """Open `folder/name` (one of `package_files`) for reading, its link rule checked again just before: the file
    opened is the regular file the check passed, never a link swapped in since it was listed."""
    path = Path(folder) / name
    root = Path(folder).resolve()
    _check_file(path, root, _hub_blob_store(root))
    handle = open(os.open(path.resolve(strict=True), os.O_RDONLY | os.O_NOFOLLOW), "rb")
    if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
        handle.close()
        raise ModelFileError(f"{path} is not a regular file; remove it from the model folder")
    return handle


def package_files(folder: Path) -> list[str]:
    """Every file under the folder as a relative path, except SHA256SUMS and hidden files or folders (a download
    tool's cache, a partial write); a pickled weight file, a link out of the folder (see the module docstring), a
    link to a folder or anything but a regular file is a ModelFileError naming it."""
    folder = Path(folder)
    root = folder.resolve()
    blobs = _hub_blob_store(root)
    names = []
    for here, dirs, files in os.walk(folder):  # links to folders are listed in `dirs`, never followed
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in dirs:
            if Path(here, name).is_symlink():
                raise ModelFileError(f"{Path(here, name)} is a link to a folder; copy the folder in instead")
        for name in files:
            path = Path(here, name)
            if name.startswith("."):
                continue
            _check_file(path, root, blobs)
            relative = path.relative_to(folder)
            if path.suffix in PICKLE_SUFFIXES:
                raise ModelFileError(f"{path} holds pickled weights, which vidgen never loads (unpickling runs "
                                     "code); " + CONVERT_HINT)
            if relative.as_posix() != SUMS_FILE:
                names.append(relative.as_posix())
    return sorted(names)


def check_weight_indexes(folder: Path, names: Iterable[str], listed: Iterable[str] | None = None) -> None:
    """ModelFileError unless every weight file each sharded-weights index among `names` (`*.index.json`) names is
    a .safetensors file beside it and among `listed` (default `names`): diffusers and transformers load whatever an
    index names, and a shard of any other suffix goes through torch.load (unpickling)."""
    names = set(names)
    listed = names if listed is None else set(listed)
    for name in sorted(n for n in names if n.endswith(".index.json")):
        path = Path(folder) / name
        try:
            weight_map = json.loads(path.read_text()).get("weight_map")
        except (OSError, ValueError, AttributeError) as e:
            raise ModelFileError(f"{path} is not a readable sharded-weights index ({e}); re-export the model") from e
        if not isinstance(weight_map, dict):
            raise ModelFileError(f"{path} has no weight_map; re-export the model")
        for shard in sorted(set(map(str, weight_map.values()))):
            beside = (PurePosixPath(name).parent / shard).as_posix()
            if not shard.endswith(".safetensors") or "/" in shard or "\\" in shard or beside not in listed:
                raise ModelFileError(f"{path} names the weight file {shard!r}, which is not a .safetensors file "
                                     "beside it in the package: vidgen loads only listed safetensors weights; "
                                     + CONVERT_HINT)


def tree_sums(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every package file under the folder (see `package_files`)."""
    return {name: sha256_file(Path(folder) / name) for name in package_files(folder)}


def write_sums(folder: Path) -> dict[str, str]:
    """(Re)write SHA256SUMS over every other file under the folder; returns what it wrote."""
    folder = Path(folder)
    sums = tree_sums(folder)
    tmp = folder / f".{SUMS_FILE}.partial"
    tmp.write_text(format_sums(sums))
    tmp.replace(folder / SUMS_FILE)
    return sums


def verify_package(folder: Path) -> dict[str, str]:
    """Raise ModelFileError unless the kind's required files and every file under the folder match SHA256SUMS;
    returns the sums."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"model path {folder} does not exist or is not a folder")
    required = REQUIRED[package_kind(folder)]
    for name in (*required, SUMS_FILE):
        if not (folder / name).is_file():
            raise ModelFileError(f"{folder} has no {name}: it is not a complete model package (expected "
                                 f"{', '.join(required)} and SHA256SUMS; a diffusers folder is packaged by "
                                 "`vidgen models import`)")
    sums = parse_sums((folder / SUMS_FILE).read_text(), str(folder / SUMS_FILE), allow_paths=True)
    for name in required:
        if name not in sums:
            raise ModelFileError(f"{folder / SUMS_FILE} does not list {name}; the model cannot be verified")
    present = package_files(folder)
    unlisted = sorted(set(present) - sums.keys())
    if unlisted:
        raise ModelFileError(f"{folder / unlisted[0]} is not listed in SHA256SUMS: a file was added to the package "
                             "after it was made; remove it or re-package the model")
    for name, digest in sums.items():
        path = folder / name
        if name not in present:
            raise ModelFileError(f"{path} is listed in SHA256SUMS but missing")
        if sha256_file(path) != digest:
            raise ModelFileError(f"{path} does not match its SHA256SUMS hash: the file was changed or damaged; "
                                 "re-download or re-export the model")
    check_weight_indexes(folder, sums)
    return sums


@dataclass(frozen=True)
class VerifiedFolder:
    """A model folder whose files matched `sums` when it was checked: what loading accepts, so a process hashes a
    folder once (a Wan-sized folder takes seconds to hash)."""

    folder: Path
    sums: dict[str, str] = field(repr=False)

    @property
    def kind(self) -> str:
        return package_kind(self.folder)


def verify_folder(folder: Path) -> VerifiedFolder:
    """Verify a package folder (`verify_package`). A diffusers folder without SHA256SUMS (as `save_pretrained` left
    it) is hashed as it is: nodes that load it check they hold the same bytes, but only a packaged folder (`vidgen
    models import`) can prove nobody changed it since."""
    folder = Path(folder)
    if package_kind(folder) == "diffusers" and not (folder / SUMS_FILE).is_file():
        sums = tree_sums(folder)
        check_weight_indexes(folder, sums)
        return VerifiedFolder(folder, sums)
    return VerifiedFolder(folder, verify_package(folder))


def _changed(path: Path) -> ModelFileError:
    return ModelFileError(f"{path} changed after it was verified; nothing was loaded from it: find who writes the "
                          "model folder, then load it again (or pull it again)")


def read_verified(verified: VerifiedFolder, name: str) -> bytes:
    """The bytes of one file of a verified folder, read once and checked against its sum: what the caller parses
    is what was verified (for files small enough to hold in memory)."""
    data = (verified.folder / name).read_bytes()
    if sha256_bytes(data) != verified.sums.get(name):
        raise _changed(verified.folder / name)
    return data


def _copy_checked(source: Path, dest: Path, digest: str) -> None:
    """Copy one file, hashing the bytes as they are written; ModelFileError unless they match `digest`."""
    hasher = hashlib.sha256()
    try:
        with open(source, "rb") as src:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):  # e.g. swapped for a link to a device
                raise _changed(source)
            with open(dest, "xb") as out:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    hasher.update(chunk)
                    out.write(chunk)
    except FileNotFoundError:
        raise _changed(source) from None
    if hasher.hexdigest() != digest:
        raise _changed(source)


@contextmanager
def private_copy(verified: VerifiedFolder, names: Iterable[str] | None = None) -> Iterator[Path]:
    """A private copy of a verified folder's files (`names`, default every file its sums list) for a loader to read
    instead of the folder: each file's bytes are checked against the sums as they are copied, so a file changed or
    swapped after verification never reaches the loader (the folder is not read again by path). The copy is a new
    folder only this user can read, in the temp dir (TMPDIR must have room for the model), removed on exit.

    A copy, not a check of the bytes a library reads itself: diffusers and transformers open weights by path (and
    memory-map them), so only a copy nobody else can write pins what they load, as resumed training checkpoints
    are pinned (`storage.training_checkpoints.load_verified`)."""
    names = sorted(verified.sums if names is None else names)
    copy = Path(tempfile.mkdtemp(prefix="vidgen-model-"))  # mode 0700
    try:
        for name in names:
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            _copy_checked(verified.folder / name, copy / name, verified.sums[name])
        check_weight_indexes(copy, names, listed=verified.sums)
        yield copy
    finally:
        shutil.rmtree(copy, ignore_errors=True)
