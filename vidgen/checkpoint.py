"""Model folders: `config.json` + `model.safetensors` + `SHA256SUMS` (+ `card.md`), never pickle.

Every file listed in SHA256SUMS is verified before the weights are read, so a truncated or tampered
model is refused with the name of the file that does not match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vidgen.model import ModelConfig, VideoDiT

CONFIG_FILE, WEIGHTS_FILE, SUMS_FILE, CARD_FILE = "config.json", "model.safetensors", "SHA256SUMS", "card.md"


class ModelFileError(ValueError):
    """A model folder that is missing a file or whose contents do not match their recorded hashes."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_sums(folder: Path) -> None:
    """(Re)write SHA256SUMS over every other file in the folder, in `sha256sum -c` format."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != SUMS_FILE)
    (folder / SUMS_FILE).write_text("".join(f"{sha256_file(p)}  {p.name}\n" for p in files))


def verify(folder: Path) -> None:
    """Raise ModelFileError unless the weights, config and every file in SHA256SUMS match their hashes."""
    for required in (CONFIG_FILE, WEIGHTS_FILE, SUMS_FILE):
        if not (folder / required).is_file():
            raise ModelFileError(f"{folder} has no {required}: it is not a vidgen model folder "
                                 "(expected config.json, model.safetensors and SHA256SUMS)")
    listed = {}
    for line in (folder / SUMS_FILE).read_text().splitlines():
        digest, _, name = line.partition("  ")
        listed[name] = digest
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if required not in listed:
            raise ModelFileError(f"{folder / SUMS_FILE} does not list {required}; the model cannot be verified")
    for name, digest in listed.items():
        path = folder / name
        if not path.is_file():
            raise ModelFileError(f"{path} is listed in SHA256SUMS but missing")
        if sha256_file(path) != digest:
            raise ModelFileError(f"{path} does not match its SHA256SUMS hash: the file was changed or damaged; "
                                 "re-download or re-export the model")


def save_model(model: VideoDiT, folder: str | Path, card: str | None = None, extra: dict | None = None,
               weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write a model folder; `extra` goes into config.json beside the model config (e.g. sampler defaults).

    `weights_dtype=torch.float16` halves the file (shipped models); loading always casts back to float32.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(weights_dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / WEIGHTS_FILE, metadata={"format": "pt"})
    config = {"model": model.config.model_dump(mode="json"), **(extra or {})}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    if card is not None:
        (folder / CARD_FILE).write_text(card)
    write_sums(folder)
    return folder


def read_config(folder: str | Path) -> dict:
    return json.loads((Path(folder) / CONFIG_FILE).read_text())


def load_model(folder: str | Path) -> VideoDiT:
    """Verify and load a model folder into a VideoDiT in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFileError(f"model path {folder} does not exist or is not a folder")
    verify(folder)
    config = read_config(folder)
    if not isinstance(config.get("model"), dict):
        raise ModelFileError(f"{folder / CONFIG_FILE} has no 'model' section; it was not written by vidgen")
    model = VideoDiT(ModelConfig(**config["model"]))
    model.load_state_dict({k: v.float() for k, v in load_file(folder / WEIGHTS_FILE).items()})
    return model.eval()
