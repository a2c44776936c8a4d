"""The diffusers backend of VideoPipeline: a text-to-video pipeline folder (Wan, LTX-Video, CogVideoX, ...).

A folder is `model_index.json` (the pipeline class and its components) plus one subfolder per component. What the
pipeline can make is read from the pipeline itself, not from a table per model: the VAE's temporal and spatial
compression and the transformer's patch sizes give the frame counts (Wan/LTX/CogVideoX: 4k+1) and the height and
width multiples, and the defaults of its `__call__` give the default clip, steps and guidance. For the drivers that
plan work (bulk render) the pipeline is built from its configs with empty (meta) weights, so planning never loads
or holds a model.

Nothing is downloaded: `HF_HUB_OFFLINE` is set before diffusers is imported and every load is local-files-only;
weights load only from safetensors (pickled weights are refused by `storage.package`).
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from storage.package import PIPELINE_INDEX, ModelFileError, private_copy
from vidgen.clip_request import Capabilities, Dimension, ResolvedClip
from vidgen.diffusion import GenerationOutput
from vidgen.pipelines.base import ModelInfo, VideoPipeline
from vidgen.pipelines.diffusers_cache import enable_step_cache
from vidgen.pipelines.options import PipelineOptions
from vidgen.pipelines.references import VerifiedModel
from vidgen.precision import compute_dtype, dtype_name

log = logging.getLogger(__name__)
MAX_FRAMES, MAX_PIXELS_SIDE = 1024, 4096  # ClipRequest's own ceilings
# Height/width multiples some pipelines check in code beyond their VAE and patch sizes (`check_inputs`).
CHECKED_MULTIPLES = {"Wan": 16, "LTX": 32}


def _offline() -> None:
    """Make every Hugging Face library refuse the network (read at import: call before importing diffusers), and
    quiet their per-component loading bars (a render loads its pipeline once per actor) and the notices torchao
    logs when diffusers imports it (kernels for other GPUs, a torch.compile deprecation): nothing a user can act on."""
    for noisy in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def read_index(folder: Path) -> tuple[str, dict[str, tuple[str, str]], dict]:
    """model_index.json -> (pipeline class name, {component: (library, class)}, the pipeline's other settings).
    A component the index lists but the folder lacks is a ModelFileError naming it."""
    path = Path(folder) / PIPELINE_INDEX
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path} is not readable JSON ({e}); it is not a diffusers pipeline folder") from e
    class_name = index.get("_class_name")
    if not isinstance(class_name, str):
        raise ModelFileError(f"{path} has no _class_name: it does not say which pipeline it is")
    components, settings = {}, {}
    for name, value in index.items():
        if name.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2:
            if value[0] is None:
                continue
            if not all(isinstance(part, str) for part in value):
                raise ModelFileError(f"{path}: component {name} is {value!r}, not [library, class]")
            components[name] = (value[0], value[1])
        else:
            settings[name] = value
    for name, (_, cls) in components.items():
        if not (Path(folder) / name).is_dir():
            raise ModelFileError(f"{folder} has no {name}/ folder, the {cls} component model_index.json lists; "
                                 "copy the whole pipeline folder")
    return class_name, components, settings


def _pipeline_class(class_name: str):
    """The diffusers pipeline class `_class_name` names, only ever an attribute of diffusers itself."""
    import diffusers

    found = getattr(diffusers, class_name, None) if class_name.isidentifier() else None
    if not (isinstance(found, type) and issubclass(found, diffusers.DiffusionPipeline)):
        raise ModelFileError(f"{PIPELINE_INDEX} _class_name {class_name!r} is not a pipeline diffusers "
                             f"{diffusers.__version__} ships; vidgen loads only diffusers' own pipelines")
    return found


def _check_library(folder: Path, name: str, library: str) -> None:
    """A component's library must be one diffusers loads components from (its loadable-classes table) or one of its
    own `diffusers.pipelines` modules, checked by name before anything is imported: the name comes from the folder,
    and importing a module runs it. diffusers would also take any module already imported (`subprocess`), and code
    in the component's folder named like the library (`scheduler/diffusers.py`) with trust_remote_code."""
    from diffusers import pipelines
    from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

    own_module = library.isidentifier() and not library.startswith("_") and \
        getattr(getattr(pipelines, library, None), "__name__", "") == f"{pipelines.__name__}.{library}"
    if library not in LOADABLE_CLASSES and not own_module:
        raise ModelFileError(f"{PIPELINE_INDEX}: component {name} names the library {library!r}; vidgen loads "
                             f"components only from {', '.join(LOADABLE_CLASSES)} or diffusers' own pipelines, and "
                             "never imports code a model folder names")
    code = Path(folder) / name / f"{library}.py"
    if code.exists():
        raise ModelFileError(f"{name}/{code.name} is code that diffusers would run as component {name}'s own class; "
                             "vidgen never runs code from a model folder: remove it")


def _classes(folder: Path, class_name: str, components: dict[str, tuple[str, str]]):
    """(pipeline class, {component: class}) resolved from diffusers' own table; every library is checked by name
    (`_check_library`) before the first is imported, and each class must be a kind diffusers loads."""
    _offline()
    for name, (library, _) in components.items():
        _check_library(folder, name, library)
    from diffusers.pipelines.pipeline_loading_utils import ALL_IMPORTABLE_CLASSES, simple_get_class_obj

    pipeline_class = _pipeline_class(class_name)
    bases = _component_bases(ALL_IMPORTABLE_CLASSES)
    found = {}
    for name, (library, cls) in components.items():
        try:
            found[name] = simple_get_class_obj(library, cls) if cls.isidentifier() else None
        except (ImportError, AttributeError, ValueError) as e:
            raise ModelFileError(f"component {name}: {library}.{cls} cannot be imported ({e})") from e
        if not (isinstance(found[name], type) and issubclass(found[name], bases)):
            raise ModelFileError(f"component {name}: {library}.{cls} is not a model, scheduler, tokenizer or "
                                 "processor class diffusers loads")
    return pipeline_class, found


def check_components(folder: Path) -> None:
    """ModelFileError unless the folder's pipeline and every component are classes diffusers itself ships, each
    library checked by name before any is imported (`_classes`)."""
    class_name, components, _ = read_index(folder)
    _classes(folder, class_name, components)


def _component_bases(names) -> tuple[type, ...]:
    """The installed base classes of diffusers' loadable-classes table, but a whole pipeline (a component that is
    a pipeline would load a second folder's model_index.json unchecked)."""
    import diffusers
    import transformers

    found = (getattr(library, base, None) for base in names if base != "DiffusionPipeline"
             for library in (diffusers, transformers))
    return tuple(base for base in found if isinstance(base, type))


def skeleton(folder: Path):
    """The pipeline built from its configs, every weight on the meta device: what it can make, without loading it.
    Reads `folder` by path: give it a folder only this process writes (a `private_copy`, a package being made)."""
    class_name, components, settings = read_index(folder)
    pipeline_class, classes = _classes(folder, class_name, components)
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    built = {}
    for name, cls in classes.items():
        where = Path(folder) / name
        try:
            if issubclass(cls, diffusers.ModelMixin):
                with init_empty_weights():
                    built[name] = cls.from_config(cls.load_config(where))
            elif issubclass(cls, transformers.PreTrainedModel):
                config = cls.config_class.from_pretrained(where, local_files_only=True)  # not Auto*: no auto_map
                with init_empty_weights():
                    built[name] = cls._from_config(config)
            else:  # schedulers, tokenizers, processors: small files
                built[name] = cls.from_pretrained(where, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ModelFileError(f"component {name} ({cls.__name__}) in {where} cannot be read: {e}") from e
    for name in inspect.signature(pipeline_class.__init__).parameters:
        if name in components or name in ("self", "args", "kwargs"):
            continue
        if name in settings:
            built[name] = settings[name]
    return pipeline_class(**{k: v for k, v in built.items()})


def _first(obj, *names):
    return next((getattr(obj, n) for n in names if getattr(obj, n, None)), None)


def _call_default(parameters, name: str):
    param = parameters.get(name)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


def _dimension(default: int | None, lowest: int, multiple: int, remainder: int, ceiling: int) -> Dimension:
    highest = ceiling - (ceiling - remainder) % multiple  # the largest size it makes, as cards and refusals name it
    rule = Dimension(default=lowest, min=lowest, max=highest, multiple=multiple, remainder=remainder)
    return rule.model_copy(update={"default": rule.nearest(default or lowest)})


def capabilities_of(pipe, dtype: str = "float32", device: str = "cpu") -> Capabilities:
    """What a diffusers pipeline (loaded, or a `skeleton`) can make, read from its components and `__call__`."""
    name = type(pipe).__name__
    parameters = inspect.signature(type(pipe).__call__).parameters
    if "num_frames" not in parameters or "prompt" not in parameters:
        raise ModelFileError(f"{name} takes no prompt and num_frames: it is not a text-to-video pipeline")
    temporal = _first(pipe, "vae_scale_factor_temporal", "vae_temporal_compression_ratio") or 1
    spatial = _first(pipe, "vae_scale_factor_spatial", "vae_spatial_compression_ratio", "vae_scale_factor") or 8
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    config = dict(getattr(denoiser, "config", {}) or {})
    patch = config.get("patch_size") or 1
    patch = patch[-1] if isinstance(patch, list | tuple) else patch
    patch_t = config.get("patch_size_t") or 1
    checked = next((m for prefix, m in CHECKED_MULTIPLES.items() if name.startswith(prefix)), 1)
    side = math.lcm(spatial * patch, checked)
    # latent frames (n - 1) / temporal + 1 must divide into temporal patches: n = 1 + temporal * (patch_t * j - 1)
    frame_multiple = temporal * patch_t
    remainder = (1 + temporal * (patch_t - 1)) % frame_multiple if temporal > 1 else 0
    first_frames = 1 + temporal * (patch_t - 1) if temporal > 1 else patch_t
    # a rotary table of rope_max_seq_len positions per axis (Wan) is as many patches as the transformer can place
    rope = config.get("rope_max_seq_len")
    max_frames = min(MAX_FRAMES, (rope * patch_t - 1) * temporal + 1) if rope else MAX_FRAMES
    max_side = min(MAX_PIXELS_SIDE, rope * patch * spatial) if rope else MAX_PIXELS_SIDE
    frames = _dimension(_call_default(parameters, "num_frames") or config.get("sample_frames"), first_frames,
                        frame_multiple, remainder, max_frames)
    sample_h, sample_w = config.get("sample_height"), config.get("sample_width")
    height = _dimension(_call_default(parameters, "height") or (sample_h and sample_h * spatial), side, side, 0,
                        max_side)
    width = _dimension(_call_default(parameters, "width") or (sample_w and sample_w * spatial), side, side, 0,
                       max_side)
    steps = _call_default(parameters, "num_inference_steps") or 50
    guidance = min(max(float(_call_default(parameters, "guidance_scale") or 5.0), 1.0), 20.0)
    return Capabilities(frames=frames, height=height, width=width, steps=steps, guidance=guidance,
                        negative_prompt="negative_prompt" in parameters, dtype=dtype, device=device)


def text_limit(pipe) -> int:
    """The most prompt tokens the pipeline reads: a transformer's fixed text length (CogVideoX), else the default
    `max_sequence_length` of its `__call__`, else the tokenizer's."""
    denoiser = getattr(pipe, "transformer", None)
    fixed = dict(getattr(denoiser, "config", {}) or {}).get("max_text_seq_length")
    parameters = inspect.signature(type(pipe).__call__).parameters
    return int(fixed or _call_default(parameters, "max_sequence_length")
               or getattr(getattr(pipe, "tokenizer", None), "model_max_length", 77))


def parameter_counts(folder: Path) -> dict[str, int]:
    """Parameters of each weighted component, read from the safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    counts = {}
    for path in sorted(Path(folder).glob("*/*.safetensors")):
        with safe_open(path, "pt") as f:
            total = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not a dict)
        counts[path.parent.name] = counts.get(path.parent.name, 0) + total
    return counts


def _load(folder: Path, dtype: torch.dtype):
    """The pipeline in `folder` (a private copy), its component classes checked first (`_classes`), with weights
    from safetensors only and no code from the folder."""
    check_components(folder)
    from diffusers import DiffusionPipeline

    # the copy may go once this returns: what is still memory-mapped keeps its (private, verified) bytes
    return DiffusionPipeline.from_pretrained(folder, dtype=dtype, local_files_only=True, use_safetensors=True,
                                             trust_remote_code=False)


def load_without(model: VerifiedModel, component: str, dtype: torch.dtype = torch.float32):
    """The pipeline with `component`'s weights dropped right after loading (moved to the meta device: its config
    stays readable). Fine-tuning's precompute holds the VAE and text encoder this way, without the transformer it
    never calls. (diffusers loads a component passed as None anyway where the pipeline lists it as optional, as
    WanPipeline does its transformer, so it is loaded and dropped rather than skipped.)"""
    with private_copy(model.verified) as copy:
        pipe = _load(copy, dtype)
    getattr(pipe, component).to("meta")
    return pipe


def model_skeleton(model: VerifiedModel):
    """`skeleton` of a verified model, read from a private copy of its config files (no weights are read)."""
    configs = [name for name in model.sums if not name.endswith(".safetensors")]
    with private_copy(model.verified, configs) as copy:
        return skeleton(copy)


def load_component(model: VerifiedModel, name: str, dtype: torch.dtype = torch.float32):
    """One model component of a verified pipeline folder (e.g. its transformer), loaded alone from a private copy
    of that component's files, its class checked as a whole pipeline's are: what a fine-tuning worker holds."""
    class_name, components, _ = read_index(model.folder)
    if name not in components:
        raise ModelFileError(f"{model.label} has no component {name!r}; it has {', '.join(sorted(components))}")
    _, classes = _classes(model.folder, class_name, {name: components[name]})
    import diffusers

    if not issubclass(classes[name], diffusers.ModelMixin):
        raise ModelFileError(f"component {name} of {model.label} is a {classes[name].__name__}, not a diffusers model")
    files = [f for f in model.sums if f.startswith(f"{name}/")]
    with private_copy(model.verified, files) as copy:
        return classes[name].from_pretrained(copy / name, torch_dtype=dtype, local_files_only=True,
                                             use_safetensors=True)


class DiffusersPipeline(VideoPipeline):
    """A diffusers text-to-video pipeline loaded once (by `vidgen.pipelines.load.load_pipeline`), generating clips."""

    backend = "diffusers"

    def __init__(self, model: VerifiedModel, device: str | torch.device = "cpu",
                 options: PipelineOptions | None = None, int8: bool = False):
        options = options or PipelineOptions()
        self.folder, self.label, self.device = model.folder, model.label, torch.device(device)
        dtype = compute_dtype(options.dtype, self.device.type)
        self.dtype = str(dtype).removeprefix("torch.")
        with private_copy(model.verified) as copy:  # every file the load reads, as verified
            self.pipe = _load(copy, dtype)
        self.pipeline_class = type(self.pipe).__name__
        if options.lora is not None:
            from vidgen.pipelines.adapters import apply_adapter
            from vidgen.pipelines.references import verify_model

            adapter = verify_model(options.lora)
            apply_adapter(self.pipe, adapter, model, options.lora_scale)
            self.label = f"{model.label}+{adapter.label}"
        if int8:
            from vidgen.quantize import quantize_int8

            self.pipe.transformer = quantize_int8(self.pipe.transformer)
        vae = getattr(self.pipe, "vae", None)
        if options.vae_tiling and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if options.vae_slicing and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
        if options.cpu_offload and self.device.type != "cpu":
            self.pipe.enable_model_cpu_offload(device=self.device)
        else:
            if options.cpu_offload:
                log.warning("cpu_offload moves components to a GPU as needed; on a CPU it does nothing")
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.cache_counter = None
        if options.cache is not None:
            self.cache_counter = enable_step_cache(self.pipe, options.cache)
        self.capabilities = capabilities_of(self.pipe, self.dtype, self.device.type)
        self.max_tokens = text_limit(self.pipe)

    @classmethod
    def load(cls, model: VerifiedModel, encoder, device: str | torch.device, int8: bool,
             options: PipelineOptions) -> DiffusersPipeline:
        """`encoder` is unused: a diffusers pipeline brings its own text encoder."""
        return cls(model, device, options, int8)

    @staticmethod
    def describe(model: VerifiedModel, options: PipelineOptions) -> ModelInfo:
        """What the model makes, as `load` on a CPU with `options` would report it (its dtype included)."""
        pipe = model_skeleton(model)
        return ModelInfo(model.folder, "diffusers", type(pipe).__name__, model.label,
                         capabilities_of(pipe, dtype_name(options.dtype, "cpu")))

    def encode(self, prompts: Sequence[str]) -> tuple[list[str] | None, dict[int, str]]:
        """The prompts the pipeline's tokenizer takes whole (in order), and why it refuses each other one: a prompt
        longer than the pipeline reads would be cut silently, so it is refused instead."""
        tokenizer = getattr(self.pipe, "tokenizer", None)
        refused = {}
        for i, prompt in enumerate(prompts):
            tokens = len(tokenizer(prompt).input_ids) if tokenizer is not None else 0
            if tokens > self.max_tokens:
                refused[i] = f"{tokens} tokens; this model reads at most {self.max_tokens}: shorten the prompt"
        good = [p for i, p in enumerate(prompts) if i not in refused]
        return (good or None), refused

    def generate(self, clips: Sequence[ResolvedClip], text: list[str] | None = None,
                 progress: Callable[[int], None] | None = None, keep_steps: tuple[int, ...] = ()) -> GenerationOutput:
        """Sample clips that share their settings in one pipeline call, one torch.Generator per clip (on the CPU,
        so a clip depends on its seed alone, not on its batch or device)."""
        if keep_steps:
            raise ValueError("trajectories: only vidgen models return their sampler states (distillation)")
        text = self.batch_text(clips, text)
        first = clips[0]
        kwargs = {}
        if self.capabilities.negative_prompt:
            kwargs["negative_prompt"] = [c.negative_prompt or "" for c in clips]
        if "max_sequence_length" in inspect.signature(type(self.pipe).__call__).parameters:
            kwargs["max_sequence_length"] = self.max_tokens
        if progress is not None:
            def on_step(pipe, step, timestep, tensors):
                progress(step + 1)
                return tensors

            kwargs["callback_on_step_end"] = on_step
        if self.cache_counter is not None:
            self.cache_counter.reset()
        started = time.perf_counter()
        with torch.inference_mode():
            out = self.pipe(prompt=list(text), num_frames=first.frames, height=first.height, width=first.width,
                            num_inference_steps=first.steps, guidance_scale=first.guidance,
                            generator=[torch.Generator("cpu").manual_seed(c.seed) for c in clips],
                            output_type="np", **kwargs)
        frames = np.asarray(out.frames, dtype=np.float32)
        expected = (len(clips), first.frames, first.height, first.width, 3)
        if frames.shape != expected:
            raise RuntimeError(f"{self.pipeline_class} made clips of shape {frames.shape}, asked {expected}")
        uint8 = (frames * 255).round().clip(0, 255).astype(np.uint8)
        cached = None if self.cache_counter is None else [self.cache_counter.as_steps(first.steps) for _ in clips]
        return GenerationOutput(uint8, [c.seed for c in clips], {"sample_s": time.perf_counter() - started},
                                cached_steps=cached)
