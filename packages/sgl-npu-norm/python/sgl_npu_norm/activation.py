"""Gated activations (SwiGLU family) with optional per-row int8 quantization."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import fail, last_dim
from sgl_npu_core.memory import empty

_silu_and_mul = torch.ops.sgl_npu_norm.silu_and_mul.default
_swiglu_oai = torch.ops.sgl_npu_norm.swiglu_oai.default
_swiglu_quant = torch.ops.sgl_npu_norm.swiglu_quant.default


def _half_width(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A new [..., d] output for x [..., 2d], of x's dtype unless given."""
    half = last_dim(x, "x") // 2
    return empty((*x.shape[:-1], half), dtype=x.dtype if dtype is None else dtype, device=x.device)


def silu_and_mul(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(gate) * up`` for ``x = [gate | up]`` of shape [..., 2d]; returns [..., d] in x's dtype."""
    out = _half_width(x) if out is None else out
    _silu_and_mul(x, out)
    return out


def swiglu_oai(x: torch.Tensor, alpha: float = 1.702, limit: float = 7.0, out: torch.Tensor | None = None):
    """GPT-OSS SwiGLU on interleaved columns (gate = even, up = odd): with ``gate = min(gate, limit)`` and
    ``up = clamp(up, -limit, limit)``, ``(up + 1) * gate * sigmoid(alpha * gate)``; [..., 2d] -> [..., d]."""
    out = _half_width(x) if out is None else out
    _swiglu_oai(x, alpha, limit, out)
    return out


def swiglu_quant(
    x: torch.Tensor,
    group_list: torch.Tensor | None = None,
    group_list_type: int = 1,
    do_limit: bool = False,
    limit: float = 7.0,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SwiGLU then per-row dynamic symmetric int8 quantization.

    ``y = silu(gate) * up`` (with ``do_limit``: ``min(silu(gate), limit) * clamp(up, -limit, limit)``),
    ``scale = max|y| / 127``, ``q = clamp(floor(y / scale + 0.5), -128, 127)``.

    Parameters
    ----------
    x : [..., 2d] float
    group_list : optional int32/int64 [E]: only the first ``total_rows`` rows are computed (MoE padding);
        ``group_list_type`` 1 means per-group counts (total = sum), 0 cumulative counts (total = last).
        The remaining rows get ``q = 0`` and ``scale = 0``.
    out : optional preallocated ``(q int8 [..., d], scale float32 [...])``

    Returns
    -------
    (q, scale)
    """
    if out is None:
        q = _half_width(x, torch.int8)
        scale = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    elif len(out) != 2:
        fail(f"out must be a (q, scale) pair, got {len(out)} items")
    else:
        q, scale = out
    _swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale)
    return q, scale
