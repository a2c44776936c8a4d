"""A VideoDiT to and from a model package folder (format and verification: `storage.package`); never pickle.

Every file listed in SHA256SUMS is verified before the weights are read, so a truncated or tampered
model is refused with the name of the file that does not match. The config and weights are then read once as bytes
and checked again against the sums (`read_verified`): what is parsed is what was verified, even if the folder
changes after verification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load, save_file

from storage.package import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    VerifiedFolder,
    read_verified,
    verify_package,
    write_sums,
)
from vidgen.clip_request import Capabilities
from vidgen.diffusion import SamplerConfig
from vidgen.model import ModelConfig, VideoDiT

__all__ = ["ModelFileError", "Package", "capabilities", "load_model", "load_package", "read_config",
           "save_model", "write_sums"]


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


def read_config(folder: str | Path | VerifiedFolder) -> dict:
    """config.json of a package folder: checked against its sums when the folder comes verified, else read as it is
    (verify the folder first: `verify_package` or `load_model`)."""
    if isinstance(folder, VerifiedFolder):
        return json.loads(read_verified(folder, CONFIG_FILE))
    return json.loads((Path(folder) / CONFIG_FILE).read_text())


def capabilities(config: dict) -> Capabilities:
    """What the model in a package makes (its positional embeddings fix the clip shape) and its sampler defaults."""
    if not isinstance(config.get("model"), dict):
        raise ModelFileError(f"{CONFIG_FILE} has no 'model' section; it was not written by vidgen")
    model = ModelConfig(**config["model"])
    sampler = SamplerConfig(**config.get("sampler", {}))
    return Capabilities(frames=model.frames, height=model.height, width=model.width, steps=sampler.steps,
                        guidance=sampler.guidance, negative_prompt=False)


@dataclass
class Package:
    """A verified, loaded package: its model (eval mode), config.json and the SHA256SUMS it was checked against."""

    folder: Path
    model: VideoDiT
    config: dict
    sums: dict[str, str]


def load_package(folder: str | Path | VerifiedFolder) -> Package:
    """Load a package folder, verifying every file first unless it comes already verified (`VerifiedFolder`)."""
    if not isinstance(folder, VerifiedFolder):
        folder = VerifiedFolder(Path(folder), verify_package(Path(folder)))
    config = read_config(folder)
    if not isinstance(config.get("model"), dict):
        raise ModelFileError(f"{folder.folder / CONFIG_FILE} has no 'model' section; it was not written by vidgen")
    model = VideoDiT(ModelConfig(**config["model"]))
    model.load_state_dict({k: v.float() for k, v in load(read_verified(folder, WEIGHTS_FILE)).items()})
    return Package(folder.folder, model.eval(), config, folder.sums)


def load_model(folder: str | Path | VerifiedFolder) -> VideoDiT:
    """Verify and load a model folder into a VideoDiT in eval mode."""
    return load_package(folder).model
