"""VideoPipeline: what every backend offers once a model is loaded, and ModelInfo, what a planner reads of a model.

Backends (`vidgen_package.py`, `diffusers_folder.py`) subclass `VideoPipeline`; `load.py` picks one by what a model
folder holds. This module imports neither, so a third backend is one new file and one line of `load.BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vidgen.clip_request import Capabilities, ResolvedClip
from vidgen.diffusion import GenerationOutput


class VideoPipeline:
    """A model loaded once on one device: `capabilities`, `label` (name@version#digest), `folder`, `backend`,
    `pipeline_class`, `encode(prompts)` -> (encoded, {index: why refused}) and `generate(clips, encoded)`."""

    backend: str
    pipeline_class: str
    capabilities: Capabilities
    label: str
    folder: Path

    def encode(self, prompts: Sequence[str]):
        raise NotImplementedError

    def generate(self, clips: Sequence[ResolvedClip], text=None, progress: Callable[[int], None] | None = None,
                 keep_steps: tuple[int, ...] = ()) -> GenerationOutput:
        """Sample clips that share their settings; `GenerationOutput.timings["sample_s"]` is the time it took.
        `keep_steps`: also return the sampler's states before those steps and the final latents (vidgen models
        only: distillation's teacher trajectories)."""
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
