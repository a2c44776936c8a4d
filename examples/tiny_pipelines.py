"""Save a tiny random-weight diffusers text-to-video pipeline folder, the way a user would save their own.

The components are built the way diffusers' own tests build them (`get_dummy_components` in
`tests/pipelines/*/test_*.py`), with a T5 tokenizer made in memory so nothing is downloaded. The clips are noise
(the weights are random) but every path vidgen runs (import, verify, render, serve) runs on them exactly as on a
real Wan, LTX-Video or CogVideoX folder.

    python examples/tiny_pipelines.py wan out/tiny-wan        # also: ltx, cogvideox
"""

from __future__ import annotations

import argparse
import logging
import os
import string
from pathlib import Path

import torch

KINDS = ("wan", "ltx", "cogvideox")
TEXT_DIM = 32
MAX_TEXT_TOKENS = 16
WORDS = ("a", "an", "the", "red", "green", "blue", "yellow", "square", "circle", "triangle", "moving", "left",
         "right", "up", "down", "cat", "dog", "sea", "city", "night", "blurry", "low", "quality", "dance", "monkey")


def tokenizer():
    """A Unigram T5 tokenizer over a few words and every letter and digit (so any prompt tokenizes)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{w}", -3.0) for w in WORDS]
    pieces += [(c, -6.0) for c in string.ascii_lowercase + string.digits + string.punctuation]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def text_encoder(umt5: bool = False):
    """A 2-layer T5 encoder (UMT5, as Wan's, with `umt5`)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    config_class, model_class = (UMT5Config, UMT5EncoderModel) if umt5 else (T5Config, T5EncoderModel)
    config = config_class(vocab_size=len(tokenizer()), d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                          relative_attention_num_buckets=8, decoder_start_token_id=0)
    return model_class(config)


def wan():
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    return WanPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                       text_encoder=text_encoder(umt5=True), tokenizer=tokenizer())


def ltx():
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=TEXT_DIM)
    # the decoder_* settings are separate from the encoder's, with large defaults: set both
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8),
                                spatio_temporal_scaling=(True, True, False, False),
                                decoder_spatio_temporal_scaling=(True, True, False, False),
                                decoder_inject_noise=(False, False, False, False, False),
                                layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
                                patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)
    return LTXPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(),
                       text_encoder=text_encoder(), tokenizer=tokenizer())


def cogvideox():
    from diffusers import AutoencoderKLCogVideoX, CogVideoXPipeline, CogVideoXTransformer3DModel, DDIMScheduler

    transformer = CogVideoXTransformer3DModel(num_attention_heads=4, attention_head_dim=8, in_channels=4,
                                              out_channels=4, time_embed_dim=2, text_embed_dim=TEXT_DIM, num_layers=1,
                                              sample_width=4, sample_height=4, sample_frames=9, patch_size=2,
                                              temporal_compression_ratio=4, max_text_seq_length=MAX_TEXT_TOKENS)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8),
                                 latent_channels=4, layers_per_block=1, norm_num_groups=2,
                                 temporal_compression_ratio=4)
    return CogVideoXPipeline(transformer=transformer, vae=vae, scheduler=DDIMScheduler(),
                             text_encoder=text_encoder(), tokenizer=tokenizer())


def save_tiny_pipeline(kind: str, folder: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline `kind` (wan, ltx, cogvideox) with weights from `seed` and save it to `folder`."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    torch.manual_seed(seed)
    pipeline = {"wan": wan, "ltx": ltx, "cogvideox": cogvideox}[kind]()
    pipeline.save_pretrained(folder)
    return Path(folder)


def quiet_libraries() -> None:
    """Keep what torchao logs when diffusers imports it (kernels for GPUs this machine lacks, a torch.compile
    deprecation) and the save's progress bars off the console: nothing a person running this can act on."""
    for noisy in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed (imported by accelerate) warns as it guesses one
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    quiet_libraries()
    folder = save_tiny_pipeline(args.kind, args.folder, args.seed).resolve()
    files = [p for p in folder.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files) / 2**20
    print(f"saved a tiny random-weight {args.kind} pipeline ({len(files)} files, {size:.1f} MiB) to {folder}\n"
          f"next: vidgen models import {folder} tiny-{args.kind} --licence apache-2.0")


if __name__ == "__main__":
    main()
