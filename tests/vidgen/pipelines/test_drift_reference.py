"""A replica's prompt-drift reference is computed once per (model, text encoder) and read from the model cache after;
a stored reference this machine did not write is refused and computed again."""

import pytest
import torch

from storage.derived import derived_folder
from storage.package import SUMS_FILE, sha256_bytes
from vidgen.drift import drift_to_bytes, world_prompt_drift
from vidgen.pipelines.drift_reference import ARTIFACT, FILE, cached_world_drift, drift_key
from vidgen.text import TextEncoder

DIGEST = "ab" * 32


@pytest.fixture(autouse=True)
def _machine(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDGEN_RUNS_SECRET", "this machine")
    monkeypatch.setenv("VIDGEN_CACHE", str(tmp_path / "cache"))


def test_computed_once_then_read_without_encoding_a_caption():
    first_encoder = TextEncoder()
    made = cached_world_drift(DIGEST, first_encoder, 8, 32, 32)
    assert first_encoder.cache_size == 707  # the distinct captions of 512 references and 256 to calibrate on
    fresh = TextEncoder()
    read = cached_world_drift(DIGEST, fresh, 8, 32, 32)
    assert fresh.cache_size == 0  # nothing encoded: the stored reference was read
    torch.testing.assert_close(read.reference, made.reference)  # normalised again on loading: float rounding
    assert (read.k, read.threshold) == (made.k, made.threshold)
    assert made.threshold == world_prompt_drift(first_encoder).threshold  # the same numbers as computing it


def test_a_tampered_reference_is_refused_and_computed_again(encoder):
    genuine = cached_world_drift(DIGEST, encoder, 8, 32, 32)
    folder = derived_folder(DIGEST, ARTIFACT, drift_key(encoder, 8, 32, 32))
    forged = genuine.reference.clone()
    forged[:] = forged[0]  # every reference the same prompt: any other prompt would score out of distribution
    data = drift_to_bytes(type(genuine)(forged, genuine.k, 2.0))
    old = sha256_bytes((folder / FILE).read_bytes())
    (folder / FILE).write_bytes(data)
    (folder / SUMS_FILE).write_text((folder / SUMS_FILE).read_text().replace(old, sha256_bytes(data)))

    again = cached_world_drift(DIGEST, encoder, 8, 32, 32)  # the encoder holds the captions: recomputing is cheap
    torch.testing.assert_close(again.reference, genuine.reference)  # the forged reference was not used
    assert again.threshold == genuine.threshold
    assert sha256_bytes((folder / FILE).read_bytes()) == old  # and the genuine one stored in its place
