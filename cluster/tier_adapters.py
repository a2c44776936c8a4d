"""A request's `lora` as the router judges it before placement: an adapter the tier serves (its `loras`, by name or
reference), made for the model the tier's replicas report, on a diffusers tier.

A tier that cannot take the adapter is not a placement option; when no tier can, the answer is 400 naming `lora` and,
per tier, the adapters it serves or both base digests (the adapter's and the served model's). The router reads each
adapter's description (adapter.json, verified with its sums) off the event loop and keeps it for `refresh_s`, so an
alias (NAME@production) moved to a new version is seen within that time; the replica checks the full base digest
again before it loads the adapter (`vidgen.pipelines.adapters.AdapterSlots`).
"""

from __future__ import annotations

import asyncio
import time

from cluster.serve_config import TierConfig
from cluster.tier_report import ServedModel
from storage.objectstore import StorageError
from storage.package import ModelFileError
from vidgen.clip_request import FieldProblem
from vidgen.pipelines.adapters import AdapterInfo, read_adapter
from vidgen.pipelines.references import verify_model


def digest_of(label: str) -> str:
    """The digest (12 hex digits) a model label ends with: NAME@vN#0123456789ab."""
    return label.rpartition("#")[2]


def adapter_problem(requested: str, tier: str, cfg: TierConfig, served: ServedModel | None,
                    described: tuple[str, AdapterInfo] | None) -> FieldProblem | None:
    """Why the `tier` cannot render with the adapter `requested` (None: it can). `described`: the (label,
    description) of the adapter the tier's `loras` resolve it to; `served`: what its replicas report."""
    if cfg.adapter_reference(requested) is None:
        serves = ", ".join(sorted(cfg.loras)) if cfg.loras else "none"
        return FieldProblem("lora", f"{requested!r} is not an adapter the {tier} tier serves (it serves: {serves})")
    if served is not None and served.backend != "diffusers":
        return FieldProblem("lora", f"the {tier} tier serves a {served.backend} model; adapters apply to diffusers "
                                    "models")
    if served is None or described is None:
        return None
    label, info = described
    if info.base_digest[:12] != digest_of(served.label):
        return FieldProblem("lora", f"adapter {label} was trained on base digest {info.base_digest[:12]} "
                                    f"({info.base_model}); the {tier} tier serves {served.label}, digest "
                                    f"{digest_of(served.label)}: name an adapter made for it")
    return None


class AdapterCatalog:
    """The adapters tiers serve, each verified and described at most once per `refresh_s`."""

    def __init__(self, refresh_s: float):
        self.refresh_s = refresh_s
        self.described: dict[str, tuple[float, str, AdapterInfo]] = {}  # reference -> (until, label, info)

    async def describe(self, reference: str) -> tuple[str, AdapterInfo]:
        """(the adapter's label, its adapter.json) of `reference`; ModelFileError or StorageError when it cannot be
        read."""
        now = time.monotonic()
        cached = self.described.get(reference)
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        label, info = await asyncio.to_thread(self._read, reference)
        self.described[reference] = (now + self.refresh_s, label, info)
        return label, info

    @staticmethod
    def _read(reference: str) -> tuple[str, AdapterInfo]:
        adapter = verify_model(reference)
        return adapter.label, read_adapter(adapter)

    async def problems(self, requested: str, tiers: dict[str, TierConfig],
                       served: dict[str, ServedModel]) -> dict[str, list[FieldProblem]]:
        """tier -> [why it cannot render with the adapter `requested`] for each tier in `served` (those reporting);
        an empty list where it can."""
        found = {}
        for tier, model in served.items():
            cfg = tiers[tier]
            reference = cfg.adapter_reference(requested)
            described = None
            if reference is not None and model.backend == "diffusers":
                try:
                    described = await self.describe(reference)
                except (ModelFileError, StorageError, OSError) as exc:
                    found[tier] = [FieldProblem("lora", f"the {tier} tier's adapter {requested} cannot be read now "
                                                        f"({exc}); tell the operator")]
                    continue
            problem = adapter_problem(requested, tier, cfg, model, described)
            found[tier] = [problem] if problem else []
        return found
