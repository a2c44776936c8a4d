"""LoRA adapter packages (what `vidgen finetune` leaves with method lora) and applying one to the pipeline it was
trained on.

An adapter package is `pytorch_lora_weights.safetensors` in diffusers' LoRA format (plain diffusers loads it with
`pipe.load_lora_weights(folder)`), `adapter.json` saying which base it adapts (its label and digest, the pipeline
class) and how (rank, alpha, targets), a card and SHA256SUMS. It is a model reference like any other (a folder,
NAME@vN, NAME@ALIAS), but it renders only on its base: an adapter whose base digest differs from the model's is
refused naming both. Applied once per process, fused into the transformer's weights (no per-step cost).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from storage.package import ADAPTER_FILE, LORA_WEIGHTS, ModelFileError, private_copy, read_verified
from vidgen.pipelines.references import VerifiedModel, model_digest

ADAPTER_FORMAT = "vidgen-lora-v1"
ADAPTER_NAME = "vidgen_lora"  # the adapter's name inside the pipeline while it is fused


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
    info = read_adapter(adapter)
    if info.base_digest != model_digest(base.sums):
        raise ModelFileError(f"adapter {adapter.label} was trained on {info.base_model}, not on {base.label}: "
                             f"render it with the model it was trained on (--model {info.base_model.split('#')[0]})")
    return info


def apply_adapter(pipe, adapter: VerifiedModel, base: VerifiedModel, scale: float = 1.0) -> AdapterInfo:
    """Load the adapter into a diffusers pipeline and fuse it at `scale` (what `set_adapters` would scale it by)."""
    info = check_base(adapter, base)
    if type(pipe).__name__ != info.pipeline_class:
        raise ModelFileError(f"adapter {adapter.label} is for a {info.pipeline_class}, this model is a "
                             f"{type(pipe).__name__}")
    with private_copy(adapter.verified, [LORA_WEIGHTS]) as copy:
        pipe.load_lora_weights(str(copy), weight_name=LORA_WEIGHTS, adapter_name=ADAPTER_NAME)
    pipe.fuse_lora(lora_scale=scale, adapter_names=[ADAPTER_NAME])
    pipe.unload_lora_weights()  # the fused weights stay; the peft layers go
    return info
