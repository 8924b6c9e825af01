"""Quantization that dispatch can apply before sending (the receiver gets ``(data, scales)``), and its inverse.

- ``int8``: per token, the Ascend recipe: ``s = 127 / (max|x| + 1e-12)``, ``q = rint(x * s)``, scale ``1 / s``
  (``reference.quantize_int8``; a C++ kernel with the same fp32 steps on CPUs).
- ``fp8_e4m3``: per 128 channels, the DeepEP recipe: ``scale = amax / 448`` (a power of two with
  ``round_scale``), ``q = e4m3(x / scale)``.
"""

from __future__ import annotations

import torch

from . import _meta, reference

_quantize_int8 = torch.ops.deep_ep.quantize_int8.default
MODES = (None, "bf16", "int8", "fp8_e4m3")
FP8_GROUP, FP8_MAX = 128, 448.0


def quantize(x: torch.Tensor, mode: str | None, round_scale: bool = False):
    """``x [N, H]`` -> ``x`` itself (None / "bf16") or ``(data, scales)``: int8 with fp32 ``[N]`` scales, or
    float8_e4m3fn with fp32 ``[N, H / 128]`` scales."""
    _meta.check(mode in MODES, f"quant_mode must be one of {MODES}, got {mode!r}")
    if mode in (None, "bf16"):
        return x
    if mode == "int8":
        if x.device.type != "cpu":
            return reference.quantize_int8(x)
        _meta.check(x.dim() == 2, f"x must be [tokens, hidden], got {list(x.shape)}")
        data, scales = torch.empty(x.shape, dtype=torch.int8), torch.empty(x.shape[0], dtype=torch.float32)
        _quantize_int8(x, data, scales)
        return data, scales
    xf = x.float()
    _meta.check(x.shape[1] % FP8_GROUP == 0, f"fp8 quantization needs a hidden size divisible by {FP8_GROUP}")
    groups = xf.view(x.shape[0], x.shape[1] // FP8_GROUP, FP8_GROUP)
    scale = groups.abs().amax(dim=-1).clamp(min=1e-4) / FP8_MAX
    if round_scale:
        scale = torch.exp2(torch.ceil(torch.log2(scale)))
    data = (groups / scale.unsqueeze(-1)).to(torch.float8_e4m3fn).view(x.shape)
    return data, scale


def dequantize(data: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """fp32 ``[N, H]`` from ``(data, scales)`` of either mode."""
    if scales.dim() == 1:  # int8, one scale per token
        return data.float() * scales.unsqueeze(1)
    return (data.float().view(data.shape[0], -1, FP8_GROUP) * scales.unsqueeze(-1)).view(data.shape)


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepEP's similarity error ``1 - 2 <x, y> / (|x|^2 + |y|^2)`` in fp64 (0 for equal tensors)."""
    x, y = x.double(), y.double()
    denominator = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denominator) if denominator > 0 else 0.0
