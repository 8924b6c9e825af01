"""Readable PyTorch references of every sgl-npu-norm op: fp32 math, results rounded once to the dtype.

They are the specification the kernels are tested against, and the fallback on devices without a kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)


def quantize_int8_affine(y: torch.Tensor, quant_scale: torch.Tensor, quant_offset=None) -> torch.Tensor:
    """``saturate(round_half_even(y * quant_scale + quant_offset))`` to int8 (a multiply, not a divide)."""
    y = y * quant_scale.float()
    if quant_offset is not None:
        y = y + quant_offset.float()
    return torch.round(y).clamp(-128, 127).to(torch.int8)


def rmsnorm(x, weight, eps=1e-6, *, bias=None, gemma=False, quant_scale=None, quant_offset=None):
    """``x * rsqrt(mean(x^2) + eps) * w (+ bias)`` over the last dim, ``w = weight`` (or ``1 + weight`` for
    Gemma); int8 through :func:`quantize_int8_affine` when ``quant_scale`` is given."""
    w = weight.float() + 1.0 if gemma else weight.float()
    y = _rms_normalize(x, eps) * w
    if bias is not None:
        y = y + bias.float()
    if quant_scale is not None:
        return quantize_int8_affine(y, quant_scale, quant_offset)
    return y.to(x.dtype)


def gemma_rmsnorm(x, weight, eps=1e-6):
    return rmsnorm(x, weight, eps, gemma=True)


def rmsnorm_bias(x, weight, bias, eps=1e-6, quant_scale=None, quant_offset=None):
    return rmsnorm(x, weight, eps, bias=bias, quant_scale=quant_scale, quant_offset=quant_offset)


def add_rmsnorm_bias(x, residual, weight, bias=None, eps=1e-6, quant_scale=None, quant_offset=None, *, gemma=False):
    """``added = x + residual`` (in the dtype), ``out = rmsnorm(added) (+ bias)``; returns ``(out, added)``."""
    added = x + residual
    out = rmsnorm(added, weight, eps, bias=bias, gemma=gemma, quant_scale=quant_scale, quant_offset=quant_offset)
    return out, added


def fused_add_rmsnorm(x, residual, weight, eps=1e-6, *, gemma=False):
    """Functional form of the in-place op: returns ``(new_x, new_residual)`` where ``new_residual = x +
    residual`` rounded to the dtype and ``new_x = rmsnorm(new_residual)``."""
    added = x + residual
    return rmsnorm(added, weight, eps, gemma=gemma), added


def gemma_fused_add_rmsnorm(x, residual, weight, eps=1e-6):
    return fused_add_rmsnorm(x, residual, weight, eps, gemma=True)


def silu_and_mul(x):
    """``silu(gate) * up`` with ``x = [gate | up]`` on the last dim."""
    gate, up = x.float().chunk(2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)


def swiglu_oai(x, alpha=1.702, limit=7.0):
    """GPT-OSS SwiGLU on interleaved columns ``gate = x[..., 0::2]``, ``up = x[..., 1::2]``."""
    xf = x.float()
    gate = xf[..., 0::2].clamp(max=limit)
    up = xf[..., 1::2].clamp(-limit, limit)
    return ((up + 1) * gate * torch.sigmoid(alpha * gate)).to(x.dtype)


def grouped_row_count(group_list, group_list_type: int) -> int:
    """Rows covered by ``group_list``: its sum (type 1, counts) or its last entry (type 0, cumulative)."""
    return int(group_list.sum()) if group_list_type == 1 else int(group_list[-1])


def swiglu_quant(x, group_list=None, group_list_type=1, do_limit=False, limit=7.0):
    """SwiGLU then per-row symmetric int8: ``scale = max|y| / 127``, ``q = clamp(floor(y / scale + 0.5))``.

    With ``group_list`` only the first ``total_rows`` rows are computed; the rest of ``q`` and ``scale`` is 0.
    Returns ``(q int8 [..., d], scale fp32 [...])``.
    """
    gate, up = x.float().chunk(2, dim=-1)
    act = F.silu(gate)
    if do_limit:
        act = act.clamp(max=limit)
        up = up.clamp(-limit, limit)
    y = act * up
    scale = y.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.floor(y / safe.unsqueeze(-1) + 0.5).clamp(-128, 127)
    q = torch.where((scale > 0).unsqueeze(-1), q, torch.zeros_like(q)).to(torch.int8)
    if group_list is not None:
        total = grouped_row_count(group_list, group_list_type)
        rows = torch.arange(y.reshape(-1, y.shape[-1]).shape[0]).reshape(y.shape[:-1])
        keep = rows < total
        q = torch.where(keep.unsqueeze(-1), q, torch.zeros_like(q))
        scale = torch.where(keep, scale, torch.zeros_like(scale))
    return q, scale
