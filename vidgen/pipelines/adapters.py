"""LoRA adapter packages (what `vidgen finetune` leaves with method lora) and applying one to the pipeline it was
trained on.

An adapter package is `pytorch_lora_weights.safetensors` in diffusers' LoRA format (plain diffusers loads it with
`pipe.load_lora_weights(folder)`), `adapter.json` saying which base it adapts (its label and digest, the pipeline
class) and how (rank, alpha, targets), a card and SHA256SUMS. It is a model reference like any other (a folder,
NAME@vN, NAME@ALIAS), but it renders only on its base: an adapter whose base digest differs from the model's is
refused naming both. Applied in one of two ways:
- fused (`apply_adapter`): once per process, into the transformer's weights (no per-step cost; bulk render, a tier's
  `pipeline.lora`);
- unfused (`AdapterSlots`): peft layers beside the base weights, several adapters loaded at once and one chosen per
  pipeline call (`set_adapters`), so a serving replica renders each request with its own adapter. The two give the
  same frames for the same seed to within rounding (tests/vidgen/pipelines/test_adapter_slots.py measures it).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass

from storage.package import ADAPTER_FILE, LORA_WEIGHTS, ModelFileError, private_copy, read_verified
from vidgen.pipelines.references import VerifiedModel, model_digest

ADAPTER_FORMAT = "vidgen-lora-v1"
ADAPTER_NAME = "vidgen_lora"  # the adapter's name inside the pipeline while it is fused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterInfo:
    """What adapter.json says."""

    pipeline_class: str
    base_model: str  # the base's label when the adapter was trained, e.g. tiny-wan@v1#0123456789ab
    base_digest: str  # `model_digest` of the base's verified sums
    rank: int
    alpha: float
    targets: list[str]
    format: str = ADAPTER_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


def read_adapter(adapter: VerifiedModel) -> AdapterInfo:
    """The adapter.json of a verified adapter package; ModelFileError for anything else."""
    if adapter.verified.kind != "adapter":
        raise ModelFileError(f"{adapter.label} is a {adapter.verified.kind} model, not a LoRA adapter (an adapter "
                             f"package holds {ADAPTER_FILE} and {LORA_WEIGHTS}: made by `vidgen finetune`)")
    try:
        raw = json.loads(read_verified(adapter.verified, ADAPTER_FILE))
        info = AdapterInfo(**raw)
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{adapter.label}: {ADAPTER_FILE} is not a vidgen adapter description ({e})") from e
    if info.format != ADAPTER_FORMAT:
        raise ModelFileError(f"{adapter.label}: adapter format {info.format!r} is not {ADAPTER_FORMAT!r}; "
                             "upgrade vidgen")
    return info


def check_base(adapter: VerifiedModel, base: VerifiedModel) -> AdapterInfo:
    """The adapter's description, once its recorded base is `base` (by digest); else a ModelFileError naming both."""
    return check_base_digest(adapter, base.label, model_digest(base.sums))


def check_base_digest(adapter: VerifiedModel, base_label: str, base_digest: str) -> AdapterInfo:
    """`check_base` against a base known by its label and `model_digest` (a loaded pipeline's)."""
    info = read_adapter(adapter)
    if info.base_digest != base_digest:
        raise ModelFileError(f"adapter {adapter.label} was trained on {info.base_model}, not on {base_label}: base "
                             f"digest {info.base_digest[:12]} is not {base_digest[:12]}; render it with the model it "
                             f"was trained on (--model {info.base_model.split('#')[0]})")
    return info


def _check_pipeline_class(pipe, adapter: VerifiedModel, info: AdapterInfo) -> None:
    if type(pipe).__name__ != info.pipeline_class:
        raise ModelFileError(f"adapter {adapter.label} is for a {info.pipeline_class}, this model is a "
                             f"{type(pipe).__name__}")


def apply_adapter(pipe, adapter: VerifiedModel, base: VerifiedModel, scale: float = 1.0) -> AdapterInfo:
    """Load the adapter into a diffusers pipeline and fuse it at `scale` (what `set_adapters` would scale it by)."""
    info = check_base(adapter, base)
    _check_pipeline_class(pipe, adapter, info)
    with private_copy(adapter.verified, [LORA_WEIGHTS]) as copy:
        pipe.load_lora_weights(str(copy), weight_name=LORA_WEIGHTS, adapter_name=ADAPTER_NAME)
    pipe.fuse_lora(lora_scale=scale, adapter_names=[ADAPTER_NAME])
    pipe.unload_lora_weights()  # the fused weights stay; the peft layers go
    return info


def slot_name(adapter: VerifiedModel) -> str:
    """The adapter's name inside a pipeline: from its digest, so two references to the same files share a slot and
    a new version of an alias gets its own."""
    return f"lora_{model_digest(adapter.sums)[:16]}"


class AdapterSlots:
    """Adapters loaded unfused into one diffusers pipeline, at most `capacity` at once (least recently used unloaded
    first), each checked against the pipeline's base before it loads. `activate` picks the adapter (or none) the
    next pipeline call renders with. Not thread-safe: call it from the thread that calls the pipeline, between
    calls (a serving replica's sampler thread)."""

    def __init__(self, pipe, base_label: str, base_digest: str, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity {capacity}: an adapter cache holds at least one adapter")
        self.pipe, self.base_label, self.base_digest, self.capacity = pipe, base_label, base_digest, capacity
        self.loaded: OrderedDict[str, AdapterInfo] = OrderedDict()  # slot name -> description, oldest use first

    def activate(self, adapter: VerifiedModel | None, scale: float = 1.0) -> None:
        """Render the next pipeline call with `adapter` at `scale` (loading it first when it is not loaded), or with
        the base model alone (None). ModelFileError for an adapter made for another base or pipeline."""
        if adapter is None:
            if self.loaded:
                self.pipe.disable_lora()
            return
        name = slot_name(adapter)
        if name in self.loaded:
            self.loaded.move_to_end(name)
        else:
            self._load(adapter, name)
        self.pipe.enable_lora()  # set_adapters alone leaves a disabled pipeline disabled
        self.pipe.set_adapters([name], [scale])

    def _load(self, adapter: VerifiedModel, name: str) -> None:
        info = check_base_digest(adapter, self.base_label, self.base_digest)
        _check_pipeline_class(self.pipe, adapter, info)
        while len(self.loaded) >= self.capacity:
            evicted, _ = self.loaded.popitem(last=False)
            self.pipe.delete_adapters(evicted)
            log.info("unloaded adapter %s (least recently used of %d)", evicted, self.capacity)
        try:
            with private_copy(adapter.verified, [LORA_WEIGHTS]) as copy:
                self.pipe.load_lora_weights(str(copy), weight_name=LORA_WEIGHTS, adapter_name=name)
        except Exception:
            if name in self.pipe.get_list_adapters().get("transformer", []):  # half loaded: leave no layers behind
                self.pipe.delete_adapters(name)
            raise
        self.loaded[name] = info
        log.info("loaded adapter %s as %s (%d of %d slots)", adapter.label, name, len(self.loaded), self.capacity)
