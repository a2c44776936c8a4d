"""Load any model by reference: one lazy table of backends, keyed by what a model folder holds.

`load_pipeline` is what bulk render's actors, the serving replicas, evaluation and `vidgen generate` call;
`describe_model` is what drivers that only plan work call (it never loads weights). Both resolve and verify the
reference once (`references.verify_model`) and hand the verified folder to the backend, which does not hash it
again. A backend's module is imported only when a model of its kind is loaded (diffusers costs seconds to import).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from storage.package import ModelFileError, package_kind
from vidgen.pipelines.base import ModelInfo, VideoPipeline
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.references import VerifiedModel, verify_model
from vidgen.text import TextEncoder


def _vidgen_backend():
    from vidgen.pipelines.vidgen_package import VidgenPipeline

    return VidgenPipeline


def _diffusers_backend():
    from vidgen.pipelines.diffusers_folder import DiffusersPipeline

    return DiffusersPipeline


# storage.package.package_kind(folder) -> the backend class (imported on first use). Each offers
# `load(model, encoder, device, int8, options)` and `describe(model) -> ModelInfo`.
BACKENDS: dict[str, Callable[[], type]] = {"vidgen": _vidgen_backend, "diffusers": _diffusers_backend}


def _backend(model: VerifiedModel):
    kind = package_kind(model.folder)
    if kind == "adapter":
        raise ModelFileError(f"{model.label} is a LoRA adapter, not a model: give its base model and the adapter "
                             f"(--model BASE --lora {model.label.split('#')[0]}, or `pipeline.lora` in a config)")
    return BACKENDS[kind]()


def load_pipeline(ref: str | Path | VerifiedModel | None, encoder: TextEncoder | None = None,
                  device: str | torch.device = "cpu", int8: bool = False,
                  options: PipelineOptions | None = None) -> VideoPipeline:
    """Resolve, verify and load a model reference; `int8` quantizes its (transformer's) linear weights."""
    model = ref if isinstance(ref, VerifiedModel) else verify_model(ref)
    return _backend(model).load(model, encoder, device, int8, options or PipelineOptions())


def describe_model(ref: str | Path | VerifiedModel | None, options: PipelineOptions | None = None) -> ModelInfo:
    """Resolve and verify a model reference and read what it makes, without loading its weights. With an adapter
    in `options` (`lora`), the adapter is verified and checked against the model too, and the label names both, as
    the loaded pipeline's does."""
    model = ref if isinstance(ref, VerifiedModel) else verify_model(ref)
    info = _backend(model).describe(model, options or PipelineOptions())
    if options is None or options.lora is None:
        return info
    if info.backend != "diffusers":
        raise ValueError(f"pipeline.lora: LoRA adapters apply to diffusers pipelines; {info.label} is a "
                         f"{info.backend} model")
    from vidgen.pipelines.adapters import check_base

    adapter = verify_model(options.lora)
    check_base(adapter, model)
    return replace(info, label=f"{info.label}+{adapter.label}")
