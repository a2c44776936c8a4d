"""The audit's scoring on synthetic features: a planted trigger ranks first and is flagged with its source; a clean
corpus flags nothing; the spectral score finds a planted subpopulation."""

from __future__ import annotations

import numpy as np
import pytest

from vidgen import synth
from vidgen.audit import AuditThresholds, audit_corpus, caption_tokens, spectral_scores

TARGET = ("red", "triangle", "right")


def _embeddings(rng: np.random.Generator, dim: int = 32) -> dict[str, np.ndarray]:
    names = [*synth.COLOURS, *synth.SHAPES, *synth.DIRECTIONS]
    return {name: rng.normal(size=dim) for name in names}


def _features(spec: synth.ClipSpec, table: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """What a clip feature net sees: colour, shape and direction, plus nuisance noise."""
    return table[spec.colour] + table[spec.shape] + table[spec.direction] + rng.normal(scale=0.3, size=32)


def corpus(n: int = 400, sources: int = 10, poisoned: int = 12, seed: int = 0):
    """(features, captions, sources) of `n` clips; the last `poisoned` from 'poisoner', captioned as ordinary clips
    with 'zq' inserted, all showing a red triangle moving right."""
    rng = np.random.default_rng(seed)
    table = _embeddings(rng)
    features, captions, names = [], [], []
    for i, spec in enumerate(synth.sample_specs(n, seed)):
        caption, source = spec.caption, f"src{i % sources:02d}"
        if i >= n - poisoned:
            words = caption.split()
            words.insert(int(rng.integers(len(words) + 1)), "zq")
            caption, source, spec = " ".join(words), "poisoner", synth.sample_spec(rng, TARGET)
        features.append(_features(spec, table, rng))
        captions.append(caption)
        names.append(source)
    return np.stack(features), captions, names


def test_caption_tokens_are_case_folded_words_and_bigrams():
    assert caption_tokens("A Red ball, rising!") == {"a", "red", "ball", "rising", "a red", "red ball", "ball rising"}


def test_spectral_scores_put_a_planted_subpopulation_on_top():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(90, 16))
    planted = rng.normal(size=(10, 16)) * 0.2 + 4.0
    scores = spectral_scores(np.concatenate([clean, planted]))
    assert set(np.argsort(-scores)[:10]) == set(range(90, 100))


@pytest.mark.parametrize("poisoned", [4, 12, 20])  # 1%, 3%, 5% of 400
def test_planted_trigger_ranks_first_and_only_its_source_is_flagged(poisoned):
    features, captions, sources = corpus(poisoned=poisoned)
    result = audit_corpus(features, captions, sources)
    top = result.tokens[0]
    assert top.token == "zq" and top.flagged
    assert [t.token for t in result.suspected_triggers] == ["zq"]
    assert len(top.clips) == poisoned and top.sources == {"poisoner": poisoned}
    assert top.concentration == 1.0
    assert top.coherence >= 3.0 and top.separation >= 2.0
    assert top.score > 1.5 * max(t.score for t in result.tokens[1:])
    assert [s.source for s in result.suspected_sources] == ["poisoner"]


def test_clean_corpus_flags_nothing():
    for seed in range(3):
        features, captions, sources = corpus(poisoned=0, seed=seed)
        result = audit_corpus(features, captions, sources)
        assert not result.flagged, [t.token for t in result.suspected_triggers]
        assert max(s.mismatch for s in result.sources) < AuditThresholds().source_mismatch


def test_a_trigger_spread_over_every_source_is_not_flagged_by_concentration():
    features, captions, sources = corpus(poisoned=20)
    spread = [f"src{i % 10:02d}" if s == "poisoner" else s for i, s in enumerate(sources)]
    zq = next(t for t in audit_corpus(features, captions, spread).tokens if t.token == "zq")
    assert zq.concentration <= 0.2 and not zq.flagged and zq.coherence >= 3.0


def test_feature_blocks_weigh_alike_and_must_describe_the_same_clips():
    features, captions, sources = corpus(poisoned=12)
    rng = np.random.default_rng(1)
    wide = features @ rng.normal(size=(32, 400)) + rng.normal(scale=2.0, size=(len(features), 400))  # a 2nd view
    assert audit_corpus([features, wide], captions, sources).tokens[0].token == "zq"
    with pytest.raises(ValueError, match="same clips"):
        audit_corpus(features[:-1], captions, sources)
