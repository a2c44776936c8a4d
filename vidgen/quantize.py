"""Int8 weights for the edge tier's model, through torchao (PyTorch's maintained quantization library).

Measured on these CPUs with torch 2.13 (`benchmarks/int8.py`, docs/BENCHMARKS.md): torchao's weight-only int8
keeps the clips within ~0.2 grey levels of fp32 and stores the linear weights in a quarter of the bytes, at 1.14x
fp32's time; its dynamic int8-activation variant was 1.9x slower and moved pixels by ~1 level; the deprecated
`torch.ao.quantization.quantize_dynamic` was 1.25x faster but 11x further from fp32 and warns on every call that
it is going away. The edge tier's speed comes from its reduced step count; int8 is for its memory.
"""

from __future__ import annotations

import copy

import torch


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose nn.Linear weights are stored and multiplied as int8 (per-channel scales)."""
    import torchao.quantization as tq

    quantized = copy.deepcopy(model).eval()
    tq.quantize_(quantized, tq.Int8WeightOnlyConfig())
    return quantized


def _tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes of a tensor; a tensor subclass such as torchao's int8 weight counts its parts (data and scales)."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def linear_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes held by the weights of the model's linear layers."""
    return sum(_tensor_bytes(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear))
