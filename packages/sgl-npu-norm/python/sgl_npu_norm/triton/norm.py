"""Triton RMSNorm family: one program per row, fp32 math, the variants picked by constexpr flags.

The launchers take the op schema's arguments (outputs preallocated), check them with ``_meta`` and write
into the outputs; see ``reference.py`` for the semantics.
"""

from __future__ import annotations

import triton
import triton.language as tl
from sgl_npu_core.checks import num_rows, row_stride
from sgl_npu_core.triton_utils import num_warps, round_half_even, to_dtype

from .. import _meta


@triton.jit
def _rmsnorm_kernel(
    x_ptr,
    x_stride,
    res_ptr,
    res_stride,
    sum_ptr,
    sum_stride,
    w_ptr,
    b_ptr,
    qs_ptr,
    qo_ptr,
    out_ptr,
    out_stride,
    hidden,
    eps,
    BLOCK: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    GEMMA: tl.constexpr,
    QUANT: tl.constexpr,
    HAS_OFFSET: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # row * stride may pass 2**31 elements
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0)
        # The sum is rounded to the dtype once; that rounded value is both stored and normalized.
        # (Everything is loaded before the stores, so sum may alias residual and out may alias x.)
        x = to_dtype(x.to(tl.float32) + r.to(tl.float32), x_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * sum_stride + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=0) / hidden + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if GEMMA:
        w = w + 1.0
    y = xf * rstd * w
    if HAS_BIAS:
        y = y + tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    if QUANT:
        y = y * tl.load(qs_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        if HAS_OFFSET:
            y = y + tl.load(qo_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        # rounding is monotone and the bounds are integers, so clamping first equals saturating after
        q = round_half_even(tl.clamp(y, -128.0, 127.0))
        tl.store(out_ptr + row * out_stride + cols, q.to(tl.int8), mask=mask)
    else:
        tl.store(out_ptr + row * out_stride + cols, to_dtype(y, out_ptr.dtype.element_ty), mask=mask)


def _launch_norm(x, residual, added, weight, bias, eps, gemma, quant_scale, quant_offset, out) -> None:
    """Runs the kernel on checked arguments; ``residual``/``added`` are both given or both None."""
    rows, hidden = num_rows(x), x.shape[-1]
    if rows == 0:
        return
    has_res = residual is not None
    block = triton.next_power_of_2(hidden)
    # Absent optional tensors are passed as `weight`: the constexpr flags keep them unread.
    _rmsnorm_kernel[(rows,)](
        x,
        row_stride(x, "x"),
        residual if has_res else weight,
        row_stride(residual, "residual") if has_res else 0,
        added if has_res else weight,
        row_stride(added, "added") if has_res else 0,
        weight,
        weight if bias is None else bias,
        weight if quant_scale is None else quant_scale,
        weight if quant_offset is None else quant_offset,
        out,
        row_stride(out, "out"),
        hidden,
        float(eps),
        BLOCK=block,
        HAS_RESIDUAL=has_res,
        HAS_BIAS=bias is not None,
        GEMMA=bool(gemma),
        QUANT=quant_scale is not None,
        HAS_OFFSET=quant_offset is not None,
        num_warps=num_warps(block),
    )


def rmsnorm(x, weight, bias, eps, gemma, quant_scale, quant_offset, out) -> None:
    _meta.check_norm(x, weight, bias, eps, quant_scale, quant_offset, out)
    _launch_norm(x, None, None, weight, bias, eps, gemma, quant_scale, quant_offset, out)


def add_rmsnorm(x, residual, weight, bias, eps, gemma, quant_scale, quant_offset, out, added) -> None:
    _meta.check_norm(x, weight, bias, eps, quant_scale, quant_offset, out, residual, added)
    _launch_norm(x, residual, added, weight, bias, eps, gemma, quant_scale, quant_offset, out)


def fused_add_rmsnorm(x, residual, weight, eps, gemma) -> None:
    # in place: the sum goes to residual, the normalized sum to x
    _meta.check_norm(x, weight, None, eps, None, None, x, residual)
    _launch_norm(x, residual, residual, weight, None, eps, gemma, None, None, x)


@triton.jit
def _sum_squares(row_ptr, begin, end, BLOCK: tl.constexpr):
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for start in range(begin, end, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        v = tl.load(row_ptr + cols, mask=cols < end, other=0.0).to(tl.float32)
        acc += v * v
    return tl.sum(acc, axis=0)


@triton.jit
def _split_sum_squares_kernel(x_ptr, x_stride, out_ptr, width0, width1, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tl.store(out_ptr + 2 * row, _sum_squares(x_ptr + row * x_stride, 0, width0, BLOCK))
    tl.store(out_ptr + 2 * row + 1, _sum_squares(x_ptr + row * x_stride, width0, width0 + width1, BLOCK))


def split_sum_squares(x, width0, width1, out) -> None:
    _meta.check_split_sum_squares(x, width0, width1, out)
    rows = num_rows(x)
    if rows:
        block = min(triton.next_power_of_2(width0 + width1), 1024)
        _split_sum_squares_kernel[(rows,)](x, row_stride(x, "x"), out, width0, width1, BLOCK=block,
                                           num_warps=num_warps(block))  # fmt: skip
