"""A serving replica's prompt-drift reference, computed once per (model digest, text encoder) and kept in the model
cache (`storage.derived`, authenticated by this machine's key), so a replica that starts reads ~0.8 MB instead of
encoding 768 captions (~3-5 s on one CPU thread)."""

from __future__ import annotations

import logging

from storage.derived import read_derived, write_derived
from vidgen.drift import PromptDrift, drift_from_bytes, drift_to_bytes, world_prompt_drift
from vidgen.text import TextEncoder

log = logging.getLogger(__name__)
ARTIFACT, FILE = "prompt-drift", "drift.safetensors"
# bump when world_prompt_drift's captions, calibration or storage change what a key stands for
DRIFT_VERSION = 1
REFERENCES, CALIBRATION, SEED = 512, 256, 0  # world_prompt_drift's defaults: 768 captions encoded


def drift_key(encoder: TextEncoder, frames: int, height: int, width: int) -> dict:
    """What the world's drift reference is a pure function of, besides the model."""
    return {"encoder": encoder.digest, "frames": frames, "height": height, "width": width, "references": REFERENCES,
            "calibration": CALIBRATION, "seed": SEED, "version": DRIFT_VERSION}


def cached_world_drift(model_digest: str, encoder: TextEncoder, frames: int, height: int, width: int,
                       cache_dir=None) -> PromptDrift:
    """The built-in world's PromptDrift for this model and encoder: read from the model cache when it verifies there,
    else computed and stored. A cache that cannot be written (a read-only home) only costs the computation."""
    key = drift_key(encoder, frames, height, width)
    try:
        files = read_derived(model_digest, ARTIFACT, key, cache_dir)
    except OSError as exc:
        log.warning("the model cache cannot be read (%s): computing the prompt-drift reference", exc)
        files = None
    if files is not None:
        return drift_from_bytes(files[FILE])
    drift = world_prompt_drift(encoder, REFERENCES, CALIBRATION, SEED, frames, height, width)
    try:
        write_derived(model_digest, ARTIFACT, key, {FILE: drift_to_bytes(drift)}, cache_dir)
    except OSError as exc:
        log.warning("the prompt-drift reference was not stored in the model cache (%s): the next start computes "
                    "it again", exc)
    return drift
