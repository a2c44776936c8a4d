"""Save a random-weight pipeline with Wan2.1-T2V-1.3B's architecture, to measure speed and memory without its weights.

The transformer (1.3B parameters, 30 layers of width 1536) and the VAE are built from the configurations Wan2.1
released, the scheduler is the one its diffusers folder ships (UniPC set up for flow matching, flow_shift 3 for 480p),
and the text encoder is one UMT5 layer of the real width (4096) over the tiny tokenizer of `tiny_pipelines.py`: the
transformer sees text embeddings of the real shape (512 tokens x 4096), the training workers never load the text
encoder, and precomputing the latents stays cheap. A fine-tuning step therefore costs what it costs on the real
model, in time and memory; the clips are noise (the weights are random), so no quality is measured with it.

    python examples/wan_shaped_pipeline.py out/wan-1.3b-shaped
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from tiny_pipelines import quiet_libraries, tokenizer

# transformer/config.json and vae/config.json of Wan-AI/Wan2.1-T2V-1.3B-Diffusers
TRANSFORMER = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
VAE = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
}
SCHEDULER = {
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "flow_shift": 3.0,
    "num_train_timesteps": 1000,
}


def wan_shaped(layers: int = TRANSFORMER["num_layers"]):
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    words = tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(words),
            d_model=TRANSFORMER["text_dim"],
            d_kv=64,
            d_ff=256,
            num_layers=1,
            num_heads=8,
            decoder_start_token_id=0,
        )
    )
    return WanPipeline(
        transformer=WanTransformer3DModel(**{**TRANSFORMER, "num_layers": layers}),
        vae=AutoencoderKLWan(**VAE),
        scheduler=UniPCMultistepScheduler(**SCHEDULER),
        text_encoder=text_encoder,
        tokenizer=words,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--layers",
        type=int,
        default=TRANSFORMER["num_layers"],
        help="transformer layers (fewer: a rehearsal of a GPU script on a CPU)",
    )
    args = parser.parse_args()
    quiet_libraries()
    torch.manual_seed(args.seed)
    pipeline = wan_shaped(args.layers)
    parameters = sum(p.numel() for p in pipeline.transformer.parameters())
    pipeline.save_pretrained(args.folder)
    folder = Path(args.folder).resolve()
    print(
        f"saved a random-weight pipeline shaped as Wan2.1-T2V-1.3B (transformer: {parameters / 1e9:.2f}B "
        f"parameters) to {folder}"
    )


if __name__ == "__main__":
    main()
