"""A VideoDiT to and from a model package folder (format and verification: `storage.package`); never pickle.

Every file listed in SHA256SUMS is verified before the weights are read, so a truncated or tampered
model is refused with the name of the file that does not match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from storage.package import (
    CARD_FILE,
    CONFIG_FILE,
    SUMS_FILE,
    WEIGHTS_FILE,
    ModelFileError,
    package_kind,
    tree_sums,
    verify_package,
    write_sums,
)
from vidgen.clip_request import Capabilities
from vidgen.diffusion import SamplerConfig
from vidgen.model import ModelConfig, VideoDiT

__all__ = ["ModelFileError", "Package", "capabilities", "folder_sums", "load_model", "load_package", "read_config",
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


def folder_sums(folder: str | Path) -> dict[str, str]:
    """The verified sums of a model folder. A diffusers folder without SHA256SUMS (as `save_pretrained` left it) is
    hashed as it is: nodes that load it check they hold the same bytes, but only a packaged folder
    (`vidgen models import`) can prove nobody changed it since."""
    folder = Path(folder)
    if package_kind(folder) == "diffusers" and not (folder / SUMS_FILE).is_file():
        return tree_sums(folder)
    return verify_package(folder)


def read_config(folder: str | Path) -> dict:
    """config.json of a package folder (verify the folder first: `verify_package` or `load_model`)."""
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


def load_package(folder: str | Path) -> Package:
    """Verify every file of a package folder (once), then load it."""
    folder = Path(folder)
    sums = verify_package(folder)
    config = read_config(folder)
    if not isinstance(config.get("model"), dict):
        raise ModelFileError(f"{folder / CONFIG_FILE} has no 'model' section; it was not written by vidgen")
    model = VideoDiT(ModelConfig(**config["model"]))
    model.load_state_dict({k: v.float() for k, v in load_file(folder / WEIGHTS_FILE).items()})
    return Package(folder, model.eval(), config, sums)


def load_model(folder: str | Path) -> VideoDiT:
    """Verify and load a model folder into a VideoDiT in eval mode."""
    return load_package(folder).model
