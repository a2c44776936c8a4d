"""The work around the transformer in one clip of the edge tier (issue: distillation), piece by piece, before and
after what was cut. With a 1- or 2-step student the transformer is a small share of a clip, so the fixed work decides
how much faster than the cloud tier the edge can be.

Per piece, one thread, median of R alternating rounds: text encoding of a new prompt (sentence-transformers'
`encode` vs the model's forward called directly, as `vidgen.text` does now), the frame decoder (fp32 vs bf16
autocast, as `vidgen.diffusion.sample` does now), the transformer passes, and the MP4 encode; then the whole clip.

    python benchmarks/clip_overhead.py --rounds 40
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch


def timed(fn, i: int) -> float:
    started = time.perf_counter()
    fn(i)
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-tiny-k1")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)

    from storage.video import encode
    from vidgen.diffusion import initial_noise, sample, to_uint8_frames
    from vidgen.pipelines.load import load_pipeline

    pipeline = load_pipeline(args.model)
    model, encoder, dtype, caps = pipeline.model, pipeline.encoder, pipeline.dtype, pipeline.capabilities
    st = encoder._model
    prompt = "a red square moving right"
    text = encoder.encode([prompt])
    latents = initial_noise([0], model.config.latent_shape)

    def old_text(i: int) -> None:
        with torch.inference_mode():
            st.encode([f"{prompt} {i}"], output_value=None, convert_to_numpy=False, show_progress_bar=False)

    def new_text(i: int) -> None:
        encoder._encode_new([f"{prompt} {i}"])

    def decode(autocast: bool):
        def run(i: int) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                to_uint8_frames(model.autoencoder.decode(latents))
        return run

    def transformer(network):
        def run(i: int) -> None:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                network(latents, torch.ones(1), text.tokens, text.mask, text.pooled)
        return run

    bf16_weights = copy.deepcopy(model).to(torch.bfloat16)

    frames = sample(model, text, [0], caps.steps, caps.guidance, dtype).frames[0]

    def clip(i: int) -> None:
        out = sample(model, encoder.encode([f"{prompt} {i} "]), [i], caps.steps, caps.guidance, dtype)
        encode(out.frames[0])

    pieces = {"text: st.encode": old_text, "text: forward (now)": new_text, "decode fp32": decode(False),
              "decode bf16 (now)": decode(True), "one transformer pass": transformer(model),
              "pass, bf16 weights": transformer(bf16_weights),
              "mp4 encode": lambda i: encode(frames), f"whole clip ({caps.steps} steps)": clip}
    for fn in pieces.values():
        fn(-1)
    times = {name: [] for name in pieces}
    for r in range(args.rounds):
        for name in (pieces if r % 2 == 0 else reversed(list(pieces))):
            times[name].append(timed(pieces[name], r))
    ms = {name: statistics.median(t) for name, t in times.items()}
    print(f"{pipeline.label}, one thread, median of {args.rounds} rounds:")
    for name, value in ms.items():
        print(f"  {name:<28} {value:7.2f} ms")
    print(f"text encoding: {ms['text: st.encode'] / ms['text: forward (now)']:.2f}x faster; decode: "
          f"{ms['decode fp32'] / ms['decode bf16 (now)']:.2f}x faster; transformer passes are "
          f"{100 * caps.steps * ms['one transformer pass'] / ms[f'whole clip ({caps.steps} steps)']:.0f}% of a clip")


if __name__ == "__main__":
    main()
