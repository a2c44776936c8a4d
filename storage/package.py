"""The model package: `config.json` + `model.safetensors` + `card.md` + `SHA256SUMS`, in a folder.

`SHA256SUMS` (in `sha256sum -c` format) lists every other file and is written last, so a package
whose sums file exists is complete; every file is checked against it before anything is loaded,
and a missing or changed file is refused by name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

CONFIG_FILE, WEIGHTS_FILE, SUMS_FILE, CARD_FILE = "config.json", "model.safetensors", "SHA256SUMS", "card.md"
REQUIRED = (CONFIG_FILE, WEIGHTS_FILE)


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
        bad_name = "/" in name if not allow_paths else (name.startswith("/") or ".." in parts)
        if not sep or len(digest) != 64 or not name or bad_name or parts[-1].startswith("."):
            raise ModelFileError(f"{where} line {number} is not '<sha256>  <file name>': {line[:80]!r}")
        sums[name] = digest
    return sums


def write_sums(folder: Path) -> dict[str, str]:
    """(Re)write SHA256SUMS over every other file in the folder; returns what it wrote."""
    folder = Path(folder)
    sums = {p.name: sha256_file(p) for p in folder.iterdir()
            if p.is_file() and p.name != SUMS_FILE and not p.name.startswith(".")}
    tmp = folder / f".{SUMS_FILE}.partial"
    tmp.write_text(format_sums(sums))
    tmp.replace(folder / SUMS_FILE)
    return sums


def verify_package(folder: Path) -> dict[str, str]:
    """Raise ModelFileError unless config, weights and every file in SHA256SUMS match; returns the sums."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"model path {folder} does not exist or is not a folder")
    for required in (*REQUIRED, SUMS_FILE):
        if not (folder / required).is_file():
            raise ModelFileError(f"{folder} has no {required}: it is not a complete vidgen model package "
                                 "(expected config.json, model.safetensors and SHA256SUMS)")
    sums = parse_sums((folder / SUMS_FILE).read_text(), str(folder / SUMS_FILE))
    for required in REQUIRED:
        if required not in sums:
            raise ModelFileError(f"{folder / SUMS_FILE} does not list {required}; the model cannot be verified")
    for name, digest in sums.items():
        path = folder / name
        if not path.is_file():
            raise ModelFileError(f"{path} is listed in SHA256SUMS but missing")
        if sha256_file(path) != digest:
            raise ModelFileError(f"{path} does not match its SHA256SUMS hash: the file was changed or damaged; "
                                 "re-download or re-export the model")
    return sums
