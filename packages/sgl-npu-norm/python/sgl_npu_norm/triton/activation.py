"""Triton gated activations (SwiGLU family) and SwiGLU with per-row int8 quantization: one program per row.

The launchers take the op schema's arguments (outputs preallocated), check them with ``_meta`` and write
into the outputs; see ``reference.py`` for the semantics.
"""

from __future__ import annotations

import triton
import triton.language as tl
from sgl_npu_core.checks import num_rows, row_stride
from sgl_npu_core.triton_utils import num_warps, to_dtype

from .. import _meta


@triton.jit
def _load_gate_up(x_ptr, row, x_stride, d, cols, mask, INTERLEAVED: tl.constexpr):
    """(gate, up) of one row as fp32: interleaved (even, odd) columns, or the halves ``[gate | up]``."""
    base = x_ptr + row * x_stride
    if INTERLEAVED:
        gate = tl.load(base + 2 * cols, mask=mask, other=0.0)
        up = tl.load(base + 2 * cols + 1, mask=mask, other=0.0)
    else:
        gate = tl.load(base + cols, mask=mask, other=0.0)
        up = tl.load(base + d + cols, mask=mask, other=0.0)
    return gate.to(tl.float32), up.to(tl.float32)


@triton.jit
def _silu(v):
    return v / (1.0 + tl.exp(-v))


@triton.jit
def _glu_kernel(x_ptr, x_stride, out_ptr, out_stride, d, alpha, limit, BLOCK: tl.constexpr, OAI: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row * stride may pass 2**31 elements
    cols = tl.arange(0, BLOCK)
    mask = cols < d
    gate, up = _load_gate_up(x_ptr, row, x_stride, d, cols, mask, OAI)
    if OAI:
        gate = tl.minimum(gate, limit, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN, as in torch.clamp
        up = tl.clamp(up, -limit, limit, propagate_nan=tl.PropagateNan.ALL)
        y = (up + 1.0) * gate * tl.sigmoid(alpha * gate)
    else:
        y = _silu(gate) * up
    tl.store(out_ptr + row * out_stride + cols, to_dtype(y, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_quant_kernel(
    x_ptr,
    x_stride,
    q_ptr,
    q_stride,
    scale_ptr,
    gl_ptr,
    gl_len,
    gl_stride,
    d,
    limit,
    BLOCK: tl.constexpr,
    DO_LIMIT: tl.constexpr,
    GROUPED: tl.constexpr,
    COUNTS: tl.constexpr,
    GL_BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < d
    if GROUPED:
        # Each program reads group_list itself, so the host never waits for its total.
        if COUNTS:
            g = tl.arange(0, GL_BLOCK)
            total = tl.sum(tl.load(gl_ptr + g * gl_stride, mask=g < gl_len, other=0).to(tl.int64), axis=0)
        else:
            total = tl.load(gl_ptr + (gl_len - 1) * gl_stride).to(tl.int64)
        # Padding rows load nothing: y = 0 gives scale = 0, hence q = 0.
        load_mask = cols < tl.where(row < total, d, 0)
    else:
        load_mask = mask
    gate, up = _load_gate_up(x_ptr, row, x_stride, d, cols, load_mask, False)
    act = _silu(gate)
    if DO_LIMIT:
        act = tl.minimum(act, limit, propagate_nan=tl.PropagateNan.ALL)
        up = tl.clamp(up, -limit, limit, propagate_nan=tl.PropagateNan.ALL)
    y = act * up
    # div_rn: correctly rounded like the reference's division (plain `/` may be approximate on GPUs)
    scale = tl.math.div_rn(tl.max(tl.abs(y), axis=0), 127.0)
    scale = tl.where(tl.max((y != y).to(tl.int32), axis=0) > 0, float("nan"), scale)  # a NaN row: NaN, as amax
    safe = tl.where(scale > 0, scale, 1.0)
    q = tl.clamp(tl.floor(tl.math.div_rn(y, safe) + 0.5), -128.0, 127.0)
    q = tl.where(scale > 0, q, 0.0)
    tl.store(q_ptr + row * q_stride + cols, q.to(tl.int8), mask=mask)
    tl.store(scale_ptr + row, scale)


def _launch_glu(x, out, oai: bool, alpha: float = 0.0, limit: float | None = None) -> None:
    _meta.check_glu(x, out, x.dtype, limit=limit, alpha=alpha)
    rows, d = num_rows(x), x.shape[-1] // 2
    if rows == 0:
        return
    block = triton.next_power_of_2(d)
    _glu_kernel[(rows,)](
        x,
        row_stride(x, "x"),
        out,
        row_stride(out, "out"),
        d,
        float(alpha),
        float(limit or 0.0),
        BLOCK=block,
        OAI=oai,
        num_warps=num_warps(block),
    )


def silu_and_mul(x, out) -> None:
    _launch_glu(x, out, oai=False)


def swiglu_oai(x, alpha, limit, out) -> None:
    _launch_glu(x, out, oai=True, alpha=alpha, limit=limit)


def swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale) -> None:
    _meta.check_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale)
    grouped = group_list is not None
    rows, d = num_rows(x), x.shape[-1] // 2
    if rows == 0:
        return
    block = triton.next_power_of_2(d)
    _swiglu_quant_kernel[(rows,)](
        x,
        row_stride(x, "x"),
        q,
        row_stride(q, "q"),
        scale,
        group_list if grouped else scale,  # unread placeholder when ungrouped
        group_list.numel() if grouped else 1,
        group_list.stride(0) if grouped else 0,
        d,
        float(limit),
        BLOCK=block,
        DO_LIMIT=bool(do_limit),
        GROUPED=grouped,
        COUNTS=grouped and group_list_type == 1,
        GL_BLOCK=triton.next_power_of_2(group_list.numel()) if grouped else 1,
        num_warps=num_warps(block),
    )
