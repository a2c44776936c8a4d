"""VideoPipeline: a model loaded once by reference, with what it can make, generating resolved clip requests.

Bulk render's actors, the serving tiers' replicas and `vidgen generate` all go through it, so the choice of
precision, the prompt encoding and the per-clip seeds are made in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import ValidationError

from vidgen.clip_request import Capabilities, ClipRequest, ResolvedClip, field_problems, resolve_clip
from vidgen.diffusion import GenerationOutput, sample
from vidgen.metrics import Detection, detect
from vidgen.precision import autocast_dtype
from vidgen.runtime.packages import capabilities, load_package
from vidgen.runtime.references import model_label, resolve_model
from vidgen.text import TextEmbedding, TextEncoder


class VideoPipeline:
    """A vidgen model package, loaded and verified once, on one device."""

    def __init__(self, model, capabilities: Capabilities, label: str, folder: Path, encoder: TextEncoder | None = None,
                 device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.capabilities, self.label, self.folder = capabilities, label, folder
        self.encoder = encoder or TextEncoder()
        self.dtype = autocast_dtype("auto", self.device.type)

    @classmethod
    def from_reference(cls, ref: str | Path | None, encoder: TextEncoder | None = None,
                       device: str | torch.device = "cpu", int8: bool = False) -> VideoPipeline:
        """Resolve, verify and load a model reference; `int8` quantizes its linear weights (the edge tier)."""
        folder = resolve_model(ref)
        package = load_package(folder)
        model = package.model
        if int8:
            from vidgen.quantize import quantize_int8

            model = quantize_int8(model)
        return cls(model, capabilities(package.config), model_label(ref, folder, package.sums), folder, encoder, device)

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
                 progress: Callable[[int], None] | None = None) -> GenerationOutput:
        """Sample clips that share their settings (steps, guidance, shape); each clip depends on its seed alone.
        `text`: their prompts' embeddings when the caller has them already (from `encode`)."""
        if len({c.settings for c in clips}) != 1:
            raise ValueError("clips sampled together must share frames, height, width, steps and guidance")
        if text is None:
            text, refused = self.encode([c.prompt for c in clips])
            if refused:
                raise ValueError(f"prompt: {next(iter(refused.values()))}")
        first = clips[0]
        return sample(self.model, text, [c.seed for c in clips], first.steps, first.guidance, self.dtype, progress)


@dataclass
class Generated:
    """Clips from `generate`, with what the detector reads from each."""

    frames: np.ndarray
    seeds: list[int]
    detections: list[Detection]
    timings: dict


def generate(model_ref: str | Path | None, prompts: list[str], seeds: list[int], steps: int | None = None,
             guidance: float | None = None, frames: int | None = None, height: int | None = None,
             width: int | None = None, encoder: TextEncoder | None = None, progress=None) -> Generated:
    """One clip per prompt (what `vidgen generate` and `vidgen demo` run); unset settings take the model's.
    A request the model cannot make is a ValueError naming the field."""
    pipeline = VideoPipeline.from_reference(model_ref, encoder)
    resolved = []
    for prompt, seed in zip(prompts, seeds, strict=True):
        try:
            request = ClipRequest(prompt=prompt, seed=seed, frames=frames, height=height, width=width, steps=steps,
                                  guidance=guidance)
            clip, problems = resolve_clip(request, pipeline.capabilities)
        except ValidationError as e:
            clip, problems = None, field_problems(e)
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.reason}" for p in problems))
        resolved.append(clip)
    out = pipeline.generate(resolved, progress=progress)
    return Generated(out.frames, out.seeds, [detect(c) for c in out.frames], out.timings)
