"""Model references -> verified local package folders: a folder, a model shipped with vidgen, or a registry ref.

The shipped models are package data (`vidgen/shipped_models/`), so wheel and editable installs find them alike.
"""

from __future__ import annotations

from pathlib import Path

from storage.package import WEIGHTS_FILE, ModelFileError, format_sums, sha256_bytes

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "shipped_models"
DEFAULT_MODEL = "shapes-tiny"


def resolve_model(ref: str | Path | None) -> Path:
    """A model reference -> a local folder (not yet verified: loading verifies).

    A folder path; the name of a model shipped with vidgen (default: the demo); or a registry reference
    (`NAME@v2`, `NAME@latest`, `s3://bucket/models/NAME@latest`), pulled into the local cache and verified there.
    """
    ref = str(ref) if ref is not None else DEFAULT_MODEL
    path = Path(ref)
    if path.is_dir():
        return path
    if (SHIPPED_MODELS / ref).is_dir():
        return SHIPPED_MODELS / ref
    if "@" in ref or "://" in ref:
        from storage.registry import pull

        return pull(ref)
    shipped = sorted(p.name for p in SHIPPED_MODELS.glob("*") if p.is_dir())
    raise ModelFileError(f"model {ref!r} is neither a folder, a shipped model ({', '.join(shipped)}) nor a registry "
                         "reference such as NAME@latest")


def model_label(ref: str | Path | None, folder: Path, sums: dict[str, str]) -> str:
    """How runs name the model they used: NAME@VERSION for registry models (else the folder's name), and always a
    digest from its verified sums (a vidgen package's weights; every file of a diffusers folder), so two
    registries' `shapes@v1` differ."""
    digest = sums[WEIGHTS_FILE] if WEIGHTS_FILE in sums else sha256_bytes(format_sums(sums).encode())
    if ref is not None and not Path(ref).is_dir() and ("@" in str(ref) or "://" in str(ref)):
        from storage.registry import cached_version

        name, version = cached_version(folder)
        return f"{name}@{version}#{digest[:12]}"
    return f"{folder.name}#{digest[:12]}"
