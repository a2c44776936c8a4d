"""The model package: a folder of files and its `SHA256SUMS`, in one of two kinds.

    vidgen      config.json + model.safetensors (+ card.md)
    diffusers   a diffusers pipeline folder: model_index.json + one subfolder per component (+ card.md)

`SHA256SUMS` (in `sha256sum -c` format) lists every other file under the folder by its relative path and is
written last, so a package whose sums file exists is complete; every file is checked against it before anything
is loaded, a missing, changed or unlisted file is refused by name, and pickled weights (`.bin`, `.pt`, ...) are
refused outright: loading a pickle runs code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE, WEIGHTS_FILE, SUMS_FILE, CARD_FILE = "config.json", "model.safetensors", "SHA256SUMS", "card.md"
PIPELINE_INDEX = "model_index.json"
REQUIRED = {"vidgen": (CONFIG_FILE, WEIGHTS_FILE), "diffusers": (PIPELINE_INDEX,)}
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
    """"diffusers" for a pipeline folder (it has model_index.json), else "vidgen"."""
    return "diffusers" if (Path(folder) / PIPELINE_INDEX).is_file() else "vidgen"


def package_files(folder: Path) -> list[str]:
    """Every file under the folder as a relative path, except SHA256SUMS and hidden files or folders (a download
    tool's cache, a partial write); a pickled weight file is a ModelFileError."""
    folder = Path(folder)
    names = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.suffix in PICKLE_SUFFIXES:
            raise ModelFileError(f"{path} holds pickled weights, which vidgen never loads (unpickling runs code); "
                                 + CONVERT_HINT)
        if relative.as_posix() != SUMS_FILE:
            names.append(relative.as_posix())
    return names


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
        if not path.is_file():
            raise ModelFileError(f"{path} is listed in SHA256SUMS but missing")
        if sha256_file(path) != digest:
            raise ModelFileError(f"{path} does not match its SHA256SUMS hash: the file was changed or damaged; "
                                 "re-download or re-export the model")
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
        return VerifiedFolder(folder, tree_sums(folder))
    return VerifiedFolder(folder, verify_package(folder))
