"""The edge tier's int8 model: a quarter of the weight bytes, the same clips within a few grey levels."""

import numpy as np
import torch

from vidgen.diffusion import sample
from vidgen.model import VideoDiT
from vidgen.quantize import linear_weight_bytes, quantize_int8


def test_int8_copy_is_smaller_and_close(micro_config, encoder):
    torch.manual_seed(0)
    model = VideoDiT(micro_config).eval()
    quantized = quantize_int8(model)
    assert type(next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).weight) is torch.nn.Parameter
    assert linear_weight_bytes(quantized) < 0.3 * linear_weight_bytes(model)

    text = encoder.encode(["a red square moving right", "a blue circle moving up"])
    full = sample(model, text, [0, 1], steps=3).frames.astype(float)
    int8 = sample(quantized, text, [0, 1], steps=3).frames.astype(float)
    assert np.abs(full - int8).mean() < 3.0  # grey levels out of 255
    assert not np.array_equal(full, int8)
