"""Model references -> local package folders: a folder, a model shipped with vidgen, or a registry ref.

`verify_model` resolves a reference and verifies its folder once, returning what loading accepts (`VerifiedModel`),
so a process never hashes the same folder twice. The shipped models are package data (`vidgen/shipped_models/`),
so wheel and editable installs find them alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storage.package import WEIGHTS_FILE, ModelFileError, VerifiedFolder, format_sums, sha256_bytes, verify_folder

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "shipped_models"
DEFAULT_MODEL = "shapes-tiny"


def _is_registry_ref(ref: str) -> bool:
    return not Path(ref).is_dir() and ("@" in ref or "://" in ref)


def resolve_model(ref: str | Path | None) -> Path:
    """A model reference -> a local folder (verified only when it was pulled: `verify_model` verifies any).

    A folder path; the name of a model shipped with vidgen (default: the demo); or a registry reference
    (`NAME@v2`, `NAME@latest`, `s3://bucket/models/NAME@latest`), pulled into the local cache and verified there.
    """
    return _resolve(ref, verify=False).folder


@dataclass(frozen=True)
class VerifiedModel:
    """A model reference resolved to a verified local folder, with the label runs name it by."""

    verified: VerifiedFolder
    label: str

    @property
    def folder(self) -> Path:
        return self.verified.folder

    @property
    def sums(self) -> dict[str, str]:
        return self.verified.sums


def verify_model(ref: str | Path | None) -> VerifiedModel:
    """Resolve a model reference and verify its folder (once: a registry pull verifies as it downloads)."""
    resolved = _resolve(ref, verify=True)
    return VerifiedModel(resolved, model_label(ref, resolved.folder, resolved.sums))


def _resolve(ref: str | Path | None, verify: bool) -> VerifiedFolder:
    ref = str(ref) if ref is not None else DEFAULT_MODEL
    path = Path(ref)
    if path.is_dir() or (SHIPPED_MODELS / ref).is_dir():
        folder = path if path.is_dir() else SHIPPED_MODELS / ref
        return verify_folder(folder) if verify else VerifiedFolder(folder, {})
    if _is_registry_ref(ref):
        from storage.registry import pull_verified

        return pull_verified(ref)
    shipped = sorted(p.name for p in SHIPPED_MODELS.glob("*") if p.is_dir())
    raise ModelFileError(f"model {ref!r} is neither a folder, a shipped model ({', '.join(shipped)}) nor a registry "
                         "reference such as NAME@latest")


def model_digest(sums: dict[str, str]) -> str:
    """A model's identity from its verified sums: a vidgen package's weights, or every file of a diffusers folder."""
    return sums[WEIGHTS_FILE] if WEIGHTS_FILE in sums else sha256_bytes(format_sums(sums).encode())


def model_label(ref: str | Path | None, folder: Path, sums: dict[str, str]) -> str:
    """How runs name the model they used: NAME@VERSION for registry models (else the folder's name), and always a
    digest from its verified sums (a vidgen package's weights; every file of a diffusers folder), so two
    registries' `shapes@v1` differ."""
    digest = model_digest(sums)
    if ref is not None and _is_registry_ref(str(ref)):
        from storage.registry import cached_version

        name, version = cached_version(folder)
        return f"{name}@{version}#{digest[:12]}"
    return f"{folder.name}#{digest[:12]}"
