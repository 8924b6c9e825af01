"""Quantization that dispatch can apply before sending (the receiver gets ``(data, scales)``), and its inverse.

- ``int8``: per token, the Ascend recipe: ``s = 127 / (max|x| + 1e-12)``, ``q = rint(x * s)``, scale ``1 / s``
  (``reference.quantize_int8``; a C++ kernel with the same fp32 steps on CPUs).
- ``fp8_e4m3``: per 128 channels, the DeepEP recipe: ``scale = amax / 448`` (a power of two with
  ``round_scale``), ``q = e4m3(x / scale)``.
- ``pertoken_fp8_e4m3``: Ascend's per-token fp8, ``scale = amax / 448`` per row, fp32 ``[N]`` scales.
- ``mx_fp8_e4m3``, ``mx_fp8_e5m2``, ``mx_fp4_e2m1``: Ascend A5's microscaling formats (OCP MX): blocks of 32
  channels share the scale ``2^(floor(log2 amax) - emax)`` (emax of the element type: 8, 15, 2), stored as
  ``float8_e8m0fnu`` ``[N, H / 32]``; elements ``x / scale`` saturated to the type's largest value, rounded to
  nearest even. fp4 elements are packed two per byte, the even channel in the low nibble
  (``float4_e2m1fn_x2 [N, H / 2]``).
"""

from __future__ import annotations

import torch

from . import _meta, reference

_quantize_int8 = torch.ops.deep_ep.quantize_int8.default
MODES = (None, "bf16", "int8", "fp8_e4m3", "pertoken_fp8_e4m3", "mx_fp8_e4m3", "mx_fp8_e5m2", "mx_fp4_e2m1")
FP8_GROUP, FP8_MAX = 128, 448.0
MX_BLOCK = 32
# MX element types: (torch dtype or None for fp4, largest value, exponent of the largest power of two)
_MX = {
    "mx_fp8_e4m3": (torch.float8_e4m3fn, 448.0, 8),
    "mx_fp8_e5m2": (torch.float8_e5m2, 57344.0, 15),
    "mx_fp4_e2m1": (None, 6.0, 2),
}
# fp4 e2m1: the magnitudes of codes 0..7, and the midpoints between neighbours; a tie goes to the even code.
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_FP4_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def quantize(x: torch.Tensor, mode: str | None, round_scale: bool = False):
    """``x [N, H]`` -> ``x`` itself (None / "bf16") or ``(data, scales)``: int8 with fp32 ``[N]`` scales,
    float8_e4m3fn with fp32 ``[N, H / 128]`` (fp8_e4m3) or ``[N]`` (pertoken_fp8_e4m3) scales, or an MX format
    (see the module's doc)."""
    _meta.check(mode in MODES, f"quant_mode must be one of {MODES}, got {mode!r}")
    if mode in (None, "bf16"):
        return x
    if mode in _MX:
        return _quantize_mx(x, mode)
    if mode == "pertoken_fp8_e4m3":
        xf = x.float()
        scale = xf.abs().amax(dim=1).clamp(min=1e-4) / FP8_MAX
        return (xf / scale.unsqueeze(1)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale
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


def _quantize_mx(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    dtype, largest, emax = _MX[mode]
    shape = list(x.shape)
    _meta.check(x.dim() == 2 and x.shape[1] % MX_BLOCK == 0,
                f"{mode} needs x [tokens, hidden] with hidden divisible by {MX_BLOCK}, got {shape}")  # fmt: skip
    blocks = x.float().view(x.shape[0], x.shape[1] // MX_BLOCK, MX_BLOCK)  # (explicit sizes: N may be 0)
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    # floor(log2 amax) read off the exponent bits (exact, unlike log2); an all-zero block gets the smallest scale
    exponent = torch.where(amax > 0, (amax.view(torch.int32) >> 23) - 127, -127)
    exponent = (exponent - emax).clamp(-127, 127)
    scale = torch.exp2(exponent.float())
    y = (blocks / scale).clamp(-largest, largest).view(x.shape)
    # exact: every scale is a power of two within e8m0's range
    scales = scale.view(x.shape[0], x.shape[1] // MX_BLOCK).to(torch.float8_e8m0fnu)
    if dtype is not None:
        return y.to(dtype), scales
    return _pack_fp4(y), scales


def _pack_fp4(y: torch.Tensor) -> torch.Tensor:
    """e2m1 codes of ``y`` (already within +-6), rounded to nearest even, two per byte (even channel low)."""
    a = y.abs()
    code = torch.zeros(y.shape, dtype=torch.uint8)
    for i, mid in enumerate(_FP4_MIDPOINTS):  # ties round up only onto an even code (i + 1 even)
        code += ((a > mid) | ((a == mid) & (i % 2 == 1))).to(torch.uint8)
    code |= (y < 0).to(torch.uint8) << 3  # -0.0 stays +0: e2m1's -0 code is never needed
    pairs = code.view(y.shape[0], y.shape[1] // 2, 2)
    return (pairs[..., 0] | (pairs[..., 1] << 4)).view(torch.float4_e2m1fn_x2)


def unpack_fp4(data: torch.Tensor) -> torch.Tensor:
    """fp32 ``[N, 2 * B]`` values of packed e2m1 ``data [N, B]``."""
    b = data.view(torch.uint8)
    codes = torch.stack([b & 0xF, b >> 4], dim=-1).view(b.shape[0], 2 * b.shape[1]).long()
    values = torch.tensor(FP4_VALUES)[codes & 7]
    return torch.where(codes >= 8, -values, values)


def dequantize(data: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """fp32 ``[N, H]`` from ``(data, scales)`` of any mode."""
    if scales.dtype == torch.float8_e8m0fnu:  # MX: a scale per 32 channels
        values = unpack_fp4(data) if data.dtype == torch.float4_e2m1fn_x2 else data.float()
        blocks = values.view(values.shape[0], values.shape[1] // MX_BLOCK, MX_BLOCK)
        return (blocks * scales.float().unsqueeze(-1)).view(values.shape)
    if scales.dim() == 1:  # int8 or pertoken fp8, one scale per token
        return data.float() * scales.unsqueeze(1)
    return (data.float().view(data.shape[0], -1, FP8_GROUP) * scales.unsqueeze(-1)).view(data.shape)


def calc_diff(x: torch.Tensor, y: torch.Tensor) -> float:
    """DeepEP's similarity error ``1 - 2 <x, y> / (|x|^2 + |y|^2)`` in fp64 (0 for equal tensors)."""
    x, y = x.double(), y.double()
    denominator = (x * x + y * y).sum()
    return float(1 - 2 * (x * y).sum() / denominator) if denominator > 0 else 0.0
