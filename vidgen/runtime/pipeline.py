"""VideoPipeline: a model loaded once by reference, with what it can make, generating resolved clip requests.

Two backends, picked by what the folder holds: vidgen's own packages (`VidgenPipeline`, below) and diffusers
pipeline folders (`vidgen.runtime.diffusers_pipeline.DiffusersPipeline`). Bulk render's actors, the serving tiers'
replicas and `vidgen generate` all go through `VideoPipeline.from_reference`, so verification, the choice of
precision, prompt checks and per-clip seeds are made in one place; drivers that only plan work read
`describe_model`, which never loads weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from storage.package import package_kind
from vidgen.clip_request import Capabilities, ClipRequest, ResolvedClip, field_problems, resolve_clip
from vidgen.diffusion import GenerationOutput, sample
from vidgen.metrics import Detection, detect
from vidgen.precision import autocast_dtype
from vidgen.runtime.options import PipelineOptions
from vidgen.runtime.packages import capabilities, folder_sums, load_package, read_config
from vidgen.runtime.references import model_label, resolve_model
from vidgen.text import TextEmbedding, TextEncoder


class VideoPipeline:
    """What every backend offers: `capabilities`, `label` (name@version#digest), `folder`, `backend`,
    `pipeline_class`, `encode(prompts)` -> (encoded, {index: why refused}) and `generate(clips, encoded)`."""

    backend: str
    pipeline_class: str
    capabilities: Capabilities
    label: str
    folder: Path

    @classmethod
    def from_reference(cls, ref: str | Path | None, encoder: TextEncoder | None = None,
                       device: str | torch.device = "cpu", int8: bool = False,
                       options: PipelineOptions | None = None) -> VideoPipeline:
        """Resolve, verify and load a model reference; `int8` quantizes its (transformer's) linear weights."""
        folder = resolve_model(ref)
        if package_kind(folder) == "diffusers":
            from vidgen.runtime.diffusers_pipeline import DiffusersPipeline

            label = model_label(ref, folder, folder_sums(folder))
            return DiffusersPipeline(folder, label, device, options, int8)
        package = load_package(folder)
        model = package.model
        if int8:
            from vidgen.quantize import quantize_int8

            model = quantize_int8(model)
        return VidgenPipeline(model, capabilities(package.config), model_label(ref, folder, package.sums), folder,
                              encoder, device)

    def encode(self, prompts: Sequence[str]):
        raise NotImplementedError

    def generate(self, clips: Sequence[ResolvedClip], text=None, progress: Callable[[int], None] | None = None,
                 keep_steps: tuple[int, ...] = ()) -> GenerationOutput:
        """`keep_steps`: also return the sampler's states before those steps and the final latents (vidgen
        models only: distillation's teacher trajectories)."""
        raise NotImplementedError

    def batch_text(self, clips: Sequence[ResolvedClip], text=None):
        """The encoded prompts of clips sampled together (encoded here when the caller has none): they must share
        their settings, and a prompt the encoder refuses is a ValueError."""
        if len({c.settings for c in clips}) != 1:
            raise ValueError("clips sampled together must share frames, height, width, steps and guidance")
        if text is None:
            text, refused = self.encode([c.prompt for c in clips])
            if refused:
                raise ValueError(f"prompt: {next(iter(refused.values()))}")
        return text


@dataclass(frozen=True)
class ModelInfo:
    """A model as a driver plans with it: verified, described, not loaded."""

    folder: Path
    backend: str
    pipeline_class: str
    label: str
    capabilities: Capabilities


def describe_model(ref: str | Path | None) -> ModelInfo:
    """Resolve and verify a model reference and read what it makes, without loading its weights."""
    folder = resolve_model(ref)
    label = model_label(ref, folder, folder_sums(folder))
    if package_kind(folder) == "diffusers":
        from vidgen.runtime.diffusers_pipeline import capabilities_of, skeleton

        pipe = skeleton(folder)
        return ModelInfo(folder, "diffusers", type(pipe).__name__, label, capabilities_of(pipe))
    return ModelInfo(folder, "vidgen", "VideoDiT", label, capabilities(read_config(folder)))


class VidgenPipeline(VideoPipeline):
    """A vidgen model package, loaded and verified once, on one device."""

    backend, pipeline_class = "vidgen", "VideoDiT"

    def __init__(self, model, capabilities: Capabilities, label: str, folder: Path, encoder: TextEncoder | None = None,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.label, self.folder = label, folder
        self.encoder = encoder or TextEncoder()
        self.dtype = autocast_dtype("auto", self.device.type)
        self.capabilities = capabilities.model_copy(update={"device": self.device.type})

    def encode(self, prompts: Sequence[str]) -> tuple[TextEmbedding | None, dict[int, str]]:
        """Embeddings of the prompts the text encoder accepts (in order), and why it refuses each other one (by
        index), so one bad prompt fails alone. Accepted prompts are encoded once (the encoder caches them)."""
        try:
            return self.encoder.encode(list(prompts)).to(self.device), {}
        except ValueError:
            refused = {}
            for i, prompt in enumerate(prompts):
                try:
                    self.encoder.encode([prompt])
                except ValueError as e:
                    refused[i] = str(e)
            good = [p for i, p in enumerate(prompts) if i not in refused]
            return (self.encoder.encode(good).to(self.device) if good else None), refused

    def generate(self, clips: Sequence[ResolvedClip], text: TextEmbedding | None = None,
                 progress: Callable[[int], None] | None = None, keep_steps: tuple[int, ...] = ()) -> GenerationOutput:
        """Sample clips that share their settings (steps, guidance, shape); each clip depends on its seed alone.
        `text`: their prompts' embeddings when the caller has them already (from `encode`)."""
        text = self.batch_text(clips, text)
        first = clips[0]
        return sample(self.model, text, [c.seed for c in clips], first.steps, first.guidance, self.dtype, progress,
                      tuple(keep_steps))


@dataclass
class Generated:
    """Clips from `generate`, with what the detector of the built-in world reads from each (vidgen models only: a
    diffusers model's clips are not of that world)."""

    frames: np.ndarray
    seeds: list[int]
    detections: list[Detection]
    timings: dict
    label: str = ""


def generate(model_ref: str | Path | None, prompts: list[str], seeds: list[int], steps: int | None = None,
             guidance: float | None = None, frames: int | None = None, height: int | None = None,
             width: int | None = None, encoder: TextEncoder | None = None, progress=None,
             negative_prompt: str | None = None, options: PipelineOptions | None = None) -> Generated:
    """One clip per prompt (what `vidgen generate` and `vidgen demo` run); unset settings take the model's.
    A request the model cannot make is a ValueError naming the field."""
    pipeline = VideoPipeline.from_reference(model_ref, encoder, options=options)
    resolved = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        try:
            request = ClipRequest(prompt=prompt, seed=seed, frames=frames, height=height, width=width, steps=steps,
                                  guidance=guidance, negative_prompt=negative_prompt)
            clip, problems = resolve_clip(request, pipeline.capabilities)
        except ValidationError as e:
            clip, problems = None, field_problems(e)
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.reason}" for p in problems))
        resolved.append(clip)
    out = pipeline.generate(resolved, progress=progress)
    detections = [detect(c) for c in out.frames] if pipeline.backend == "vidgen" else []
    return Generated(out.frames, out.seeds, detections, out.timings, pipeline.label)
