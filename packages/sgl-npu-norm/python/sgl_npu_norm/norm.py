"""RMSNorm family. Every op computes in fp32 over the last dim and accepts any number of leading dims
(any layout whose rows are contiguous and evenly spaced, e.g. a row slice)."""

from __future__ import annotations

import torch
from sgl_npu_core.memory import empty_like

from . import _meta

_rmsnorm = torch.ops.sgl_npu_norm.rmsnorm.default
_add_rmsnorm = torch.ops.sgl_npu_norm.add_rmsnorm.default
_fused_add_rmsnorm = torch.ops.sgl_npu_norm.fused_add_rmsnorm.default


def _norm_out(x: torch.Tensor, quant_scale, out):
    if out is not None:
        return out
    return empty_like(x, torch.int8 if quant_scale is not None else x.dtype)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None) -> torch.Tensor:
    """``out = x * rsqrt(mean(x^2, -1) + eps) * weight``.

    Parameters
    ----------
    x : [..., H] float32 / float16 / bfloat16
    weight : [H], any of the three float dtypes
    out : optional preallocated [..., H] of x's dtype
    """
    out = _norm_out(x, None, out)
    _rmsnorm(x, weight, None, eps, False, None, None, out)
    return out


def gemma_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, out: torch.Tensor | None = None):
    """Gemma RMSNorm: ``x * rsqrt(mean(x^2) + eps) * (1 + weight)``; shapes as :func:`rmsnorm`."""
    out = _norm_out(x, None, out)
    _rmsnorm(x, weight, None, eps, True, None, None, out)
    return out


def rmsnorm_bias(x, weight, bias, eps=1e-6, quant_scale=None, quant_offset=None, out=None) -> torch.Tensor:
    """``rmsnorm(x) * weight + bias``; with ``quant_scale`` [H] (and optional ``quant_offset`` [H]) the result
    is int8: ``saturate(round(y * quant_scale + quant_offset))``. ``bias`` may be None."""
    out = _norm_out(x, quant_scale, out)
    _rmsnorm(x, weight, bias, eps, False, quant_scale, quant_offset, out)
    return out


def add_rmsnorm_bias(
    x, residual, weight, bias=None, eps=1e-6, quant_scale=None, quant_offset=None, out=None, added=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``added = x + residual`` (rounded to the dtype), ``out = rmsnorm(added) * weight (+ bias)``, int8 as in
    :func:`rmsnorm_bias` when ``quant_scale`` is given. Returns ``(out, added)``; both accept preallocated
    tensors, as ``out=`` and ``added=`` or as the pair ``out=(out, added)`` (the form of the other ops with two
    outputs)."""
    if isinstance(out, (tuple, list)):
        _meta.check(len(out) == 2 and added is None, "out must be the pair (out, added), with added not given apart")
        out, added = out
    out = _norm_out(x, quant_scale, out)
    added = empty_like(x, x.dtype) if added is None else added
    _add_rmsnorm(x, residual, weight, bias, eps, False, quant_scale, quant_offset, out, added)
    return out, added


def fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> None:
    """In place: ``residual += x`` (rounded to the dtype), then ``x = rmsnorm(residual) * weight``."""
    _fused_add_rmsnorm(x, residual, weight, eps, False)


def gemma_fused_add_rmsnorm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> None:
    """In place: ``residual += x``, then ``x = rmsnorm(residual) * (1 + weight)``."""
    _fused_add_rmsnorm(x, residual, weight, eps, True)
