import pytest
import torch

from vidgen.text import EMBED_DIM, MAX_TOKENS


def test_encodes_tokens_mask_and_pooled_and_caches(encoder):
    prompts = ["a red circle moving left", "a blue square moving up", "a red circle moving left"]
    emb = encoder.encode(prompts)
    assert emb.tokens.shape == (3, MAX_TOKENS, EMBED_DIM)
    assert emb.pooled.shape == (3, EMBED_DIM)
    lengths = emb.mask.sum(1)
    assert 6 <= lengths[0] <= 10 and bool((emb.tokens[0, lengths[0]:] == 0).all())
    assert torch.allclose(emb.pooled.norm(dim=-1), torch.ones(3), atol=1e-4)
    assert torch.equal(emb.tokens[0], emb.tokens[2])
    size = encoder.cache_size
    encoder.encode(prompts)
    assert encoder.cache_size == size


def test_similar_prompts_are_closer_than_different_ones(encoder):
    p = encoder.encode(["a red circle moving left", "red ball drifting to the left", "a cyan square moving up"]).pooled
    assert float(p[0] @ p[1]) > float(p[0] @ p[2])


def test_bad_prompts_are_refused(encoder):
    with pytest.raises(ValueError, match="empty"):
        encoder.encode(["  "])
    with pytest.raises(ValueError, match="tokens long"):
        encoder.encode(["a very long prompt " * 10])


def test_the_cache_is_a_bounded_lru_that_keeps_no_prompt_text(encoder, monkeypatch):
    from collections import OrderedDict

    small = encoder  # the session's encoder, with a fresh cache of 2 entries for this test
    monkeypatch.setattr(small, "cache_entries", 2)
    monkeypatch.setattr(small, "_cache", OrderedDict())
    first = small.encode(["a red circle moving left"]).pooled
    small.encode(["a blue square moving up"])
    small.encode(["a red circle moving left"])  # used again: now the most recent
    small.encode(["a green triangle moving down"])  # evicts the blue square, the least recently used
    assert small.cache_size == 2
    assert torch.equal(small.encode(["a red circle moving left"]).pooled, first)
    keys = list(small._cache)
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys)  # sha256 digests, not prompts
    assert small._key("a blue square moving up") not in keys
