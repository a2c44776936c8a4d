"""The vidgen backend of VideoPipeline: a vidgen model package (config.json + model.safetensors), on one device."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vidgen.clip_request import Capabilities, ResolvedClip
from vidgen.diffusion import GenerationOutput, SamplerConfig, sample
from vidgen.model import VideoDiT
from vidgen.pipelines.base import ModelInfo, VideoPipeline
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.packages import capabilities, load_package, read_config
from vidgen.pipelines.references import VerifiedModel
from vidgen.precision import autocast_dtype
from vidgen.text import TextEmbedding, TextEncoder, encode_each


class VidgenPipeline(VideoPipeline):
    """A VideoDiT with its text encoder and sampler defaults, sampling under the precision its options name."""

    backend, pipeline_class = "vidgen", "VideoDiT"

    def __init__(self, model: VideoDiT, capabilities: Capabilities, label: str, folder,
                 encoder: TextEncoder | None = None, device: str | torch.device = "cpu",
                 options: PipelineOptions | None = None):
        options = options or PipelineOptions()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.label, self.folder = label, folder
        self.encoder = encoder or TextEncoder()
        self.dtype = autocast_dtype(options.dtype, self.device.type)
        self.capabilities = capabilities.model_copy(update={"device": self.device.type})
        self.cache_threshold = _cache_threshold(options, label)

    @classmethod
    def load(cls, model: VerifiedModel, encoder: TextEncoder | None, device: str | torch.device, int8: bool,
             options: PipelineOptions) -> VidgenPipeline:
        if options.lora is not None:
            raise ValueError(f"pipeline.lora: LoRA adapters apply to diffusers pipelines; {model.label} is a vidgen "
                             "model (fine-tune it with `vidgen train --resume`, or drop --lora)")
        package = load_package(model.verified)
        network = package.model
        if int8:
            from vidgen.quantize import quantize_int8

            network = quantize_int8(network)
        return cls(network, capabilities(package.config), model.label, model.folder, encoder, device, options)

    @classmethod
    def from_model(cls, model: VideoDiT, sampler: SamplerConfig, encoder: TextEncoder | None = None,
                   label: str = "in training", options: PipelineOptions | None = None) -> VidgenPipeline:
        """A model in memory (a run evaluating what it trains), with the sampler settings it is judged at."""
        cfg = model.config
        caps = Capabilities(frames=cfg.frames, height=cfg.height, width=cfg.width, steps=sampler.steps,
                            guidance=sampler.guidance, negative_prompt=False)
        return cls(model, caps, label, None, encoder, next(model.parameters()).device, options)

    @staticmethod
    def describe(model: VerifiedModel, options: PipelineOptions) -> ModelInfo:
        return ModelInfo(model.folder, "vidgen", "VideoDiT", model.label, capabilities(read_config(model.verified)))

    def encode(self, prompts: Sequence[str]) -> tuple[TextEmbedding | None, dict[int, str]]:
        """Embeddings of the prompts the text encoder accepts (in order), and why it refuses each other one (by
        index), so one bad prompt fails alone."""
        text, refused = encode_each(self.encoder, prompts)
        return (text.to(self.device) if text is not None else None), refused

    def generate(self, clips: Sequence[ResolvedClip], text: TextEmbedding | None = None,
                 progress: Callable[[int], None] | None = None, keep_steps: tuple[int, ...] = ()) -> GenerationOutput:
        """Sample clips that share their settings (steps, guidance, shape); each clip depends on its seed alone.
        `text`: their prompts' embeddings when the caller has them already (from `encode`)."""
        text = self.batch_text(clips, text)
        first = clips[0]
        return sample(self.model, text, [c.seed for c in clips], first.steps, first.guidance, self.dtype, progress,
                      tuple(keep_steps), self.cache_threshold)


def _cache_threshold(options: PipelineOptions, label: str) -> float | None:
    """The first-block cache threshold the options ask for (None: no caching); other kinds are diffusers' own."""
    if options.cache is None:
        return None
    if options.cache.kind != "first_block":
        raise ValueError(f"pipeline.cache.kind: {options.cache.kind} is a diffusers cache; {label} is a vidgen model, "
                         "which caches with kind first_block")
    return options.cache.threshold
