"""Triton QK-norm + RoPE primitive (``head_norm_rope``): one program per (token, head).

Each program loads its head and, for the rotated dims, the partner of every element (``j +- rope_dim/2`` for
NeoX, ``j ^ 1`` for GPT-J), normalizes both the same way, and writes ``y * C + y_partner * S``; see
``HeadNormRopeArgs`` in ``csrc/kernels/kernels.h`` for the tables and ``reference.head_norm_rope``.
"""

from __future__ import annotations

import triton
import triton.language as tl
from sgl_npu_core.triton_utils import num_warps, to_dtype

from .. import _meta


@triton.jit
def _normed(v, rstd, w_row, b_row, idx, mask, dtype: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
            GEMMA: tl.constexpr):  # fmt: skip
    """v * rstd * w (+ b), rounded to ``dtype`` (as the unfused norm stores it), back in fp32."""
    v = v * rstd
    if HAS_W:
        w = tl.load(w_row + idx, mask=mask, other=0.0).to(tl.float32)
        if GEMMA:
            w = w + 1.0
        v = v * w
    if HAS_B:
        v = v + tl.load(b_row + idx, mask=mask, other=0.0).to(tl.float32)
    return to_dtype(v, dtype).to(tl.float32)


@triton.jit
def _head_norm_rope_kernel(
    x_ptr, x_token_stride, x_head_stride, out_ptr, out_token_stride, out_head_stride,
    w_ptr, b_ptr, param_head_stride, rstd_ptr, cos_ptr, sin_ptr, table_stride, table_rows, pos_ptr,
    width, eps, rope_dim,
    BLOCK: tl.constexpr, NORM: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, GEMMA: tl.constexpr,
    HAS_RSTD: tl.constexpr, ROPE: tl.constexpr, NEOX: tl.constexpr, FULL_WIDTH: tl.constexpr, HAS_POS: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < width
    dtype = out_ptr.dtype.element_ty
    x_row = x_ptr + t * x_token_stride + h * x_head_stride
    y = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
    half = rope_dim // 2
    in_rope = cols < rope_dim
    if NEOX:
        partner = tl.where(cols < half, cols + half, cols - half)
    else:
        partner = cols ^ 1
    if ROPE:  # everything is loaded before the store, so out may be x
        yp = tl.load(x_row + partner, mask=mask & in_rope, other=0.0).to(tl.float32)
    if NORM:
        if HAS_RSTD:
            rstd = tl.load(rstd_ptr + t)
        else:
            rstd = tl.rsqrt(tl.sum(y * y, axis=0) / width + eps)
        w_row = w_ptr + h * param_head_stride
        b_row = b_ptr + h * param_head_stride
        y = _normed(y, rstd, w_row, b_row, cols, mask, dtype, HAS_W, HAS_B, GEMMA)
        if ROPE:
            yp = _normed(yp, rstd, w_row, b_row, partner, mask & in_rope, dtype, HAS_W, HAS_B, GEMMA)
    if ROPE:
        row = t
        if HAS_POS:  # the CPU kernel raises on positions outside the tables; on a device they are clamped
            row = tl.minimum(tl.maximum(tl.load(pos_ptr + t).to(tl.int64), 0), table_rows - 1)
        if FULL_WIDTH:
            k = cols
        elif NEOX:
            k = cols % tl.maximum(half, 1)
        else:
            k = cols // 2
        c = tl.load(cos_ptr + row * table_stride + k, mask=mask & in_rope, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + row * table_stride + k, mask=mask & in_rope, other=0.0).to(tl.float32)
        if NEOX:
            first = cols < half
        else:
            first = (cols % 2) == 0
        s = tl.where(first, -s, s)
        y = tl.where(in_rope, y * c + yp * s, y)
    tl.store(out_ptr + t * out_token_stride + h * out_head_stride + cols, to_dtype(y, dtype), mask=mask)


def head_norm_rope(*args) -> None:
    """The op schema's arguments (x, weight, ..., full_width, out): checked, then launched."""
    launch_head_norm_rope(_meta.check_head_norm_rope(*args), *args)


def launch_head_norm_rope(size, x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox,
                          full_width, out) -> None:  # fmt: skip
    """Launch on arguments already checked; ``size`` is the per-channel parameter size the check returned."""
    src = out if x is None else x
    tokens, heads, width = out.shape
    if tokens == 0 or heads == 0:
        return
    rope = rope_dim > 0
    has_w, has_b = norm and weight is not None, norm and bias is not None
    block = triton.next_power_of_2(width)
    _head_norm_rope_kernel[(tokens, heads)](
        src, src.stride(0), src.stride(1), out, out.stride(0), out.stride(1),
        weight if has_w else out, bias if has_b else out, 0 if size == width else width,
        rstd if rstd is not None else out,
        cos if rope else out, sin if rope else out, cos.stride(0) if rope else 0, cos.shape[0] if rope else 1,
        positions if rope and positions is not None else out,
        width, float(eps), rope_dim,
        BLOCK=block, NORM=bool(norm), HAS_W=has_w, HAS_B=has_b, GEMMA=bool(gemma), HAS_RSTD=rstd is not None,
        ROPE=rope, NEOX=bool(neox), FULL_WIDTH=bool(neox and full_width),
        HAS_POS=rope and positions is not None,
        num_warps=num_warps(block),
    )  # fmt: skip
