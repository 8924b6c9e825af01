"""Triton QK-norm + RoPE primitive (``head_norm_rope``): one program per head of a block of tokens.

Each program loads its head and, for the rotated dims, the partner of every element (``j +- rope_dim/2`` for
NeoX, ``j ^ 1`` for GPT-J), normalizes both the same way, and writes ``y * C + y_partner * S``; see
``HeadNormRopeArgs`` in ``csrc/kernels/kernels.h`` for the tables and ``reference.head_norm_rope``.
"""

from __future__ import annotations

import triton
import triton.language as tl
from sgl_npu_core.triton_utils import num_warps, to_dtype

from .. import _meta

# Elements per program (tokens x head width). One (token, head) per program left the GPU mostly idle (H200,
# Qwen3-8B split op at 4096 tokens: 114 us, torch.compile 58 us; 512: 60 us). Tiles past 512 gain nothing without
# positions and lose with them (apply_rope Qwen3-8B: 51 us at 512, 110 us at 2048): see benchmarks/tune_rope_triton.py.
TILE_ELEMENTS = 512
# Programs to keep: when the tokens' blocks times the heads give more, heads are looped inside a program, which
# reads its tokens' cos/sin rows once for all of them (H200, 4096 tokens, Qwen3-8B: apply_rope 51 -> 29 us,
# positions variant 86 -> 61 us; 1024 or 256 programs were slower than 4096).
MIN_PROGRAMS = 4096


@triton.jit
def _normed(v, rstd, w, b, dtype: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    """v * rstd * w (+ b), rounded to ``dtype`` (as the unfused norm stores it), back in fp32."""
    v = v * rstd
    if HAS_W:
        v = v * w
    if HAS_B:
        v = v + b
    return to_dtype(v, dtype).to(tl.float32)


@triton.jit
def _param(row, idx, mask, GEMMA: tl.constexpr):
    """A per-channel parameter at ``idx`` as a [1, BLOCK] fp32 row (Gemma's weights: 1 + w)."""
    v = tl.load(row + idx, mask=mask, other=0.0).to(tl.float32)
    if GEMMA:
        v = v + 1.0
    return v[None, :]


@triton.jit
def _head_norm_rope_kernel(
    x_ptr, x_token_stride, x_head_stride, out_ptr, out_token_stride, out_head_stride,
    w_ptr, b_ptr, param_head_stride, rstd_ptr, cos_ptr, sin_ptr, table_stride, table_rows, pos_ptr,
    tokens, heads, heads_per_program, width, eps, rope_dim,
    copy_src, copy_src_token_stride, copy_src_head_stride, copy_dst, copy_dst_token_stride, copy_dst_head_stride,
    BLOCK_T: tl.constexpr, BLOCK: tl.constexpr, NORM: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    GEMMA: tl.constexpr, HAS_RSTD: tl.constexpr, ROPE: tl.constexpr, NEOX: tl.constexpr, FULL_WIDTH: tl.constexpr,
    HAS_POS: tl.constexpr, HAS_COPY: tl.constexpr,
):  # fmt: skip
    """``heads_per_program`` heads of BLOCK_T tokens per program, a [BLOCK_T, BLOCK] tile at a time: the tokens'
    cos/sin rows (and rstd) are loaded once for all of those heads. With HAS_COPY each tile of ``copy_src`` (the
    same [tokens, heads, width] shape: the fused row's v or gate) goes to ``copy_dst`` in the same loop."""
    toks = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)
    h0 = tl.program_id(1) * heads_per_program
    cols = tl.arange(0, BLOCK)
    col_ok = cols < width
    tok_ok = toks < tokens
    mask = tok_ok[:, None] & col_ok[None, :]
    dtype = out_ptr.dtype.element_ty
    half = rope_dim // 2
    in_rope = cols < rope_dim
    if NEOX:
        partner = tl.where(cols < half, cols + half, cols - half)
    else:
        partner = cols ^ 1
    rope_ok = col_ok & in_rope
    rope_mask = tok_ok[:, None] & rope_ok[None, :]  # the rotated dims of the block's tokens
    if ROPE:
        row = toks
        if HAS_POS:  # the CPU kernel raises on positions outside the tables; on a device they are clamped
            row = tl.load(pos_ptr + toks, mask=tok_ok, other=0).to(tl.int64)
            row = tl.minimum(tl.maximum(row, 0), table_rows - 1)
        if FULL_WIDTH:
            k = cols
        elif NEOX:
            k = cols % tl.maximum(half, 1)
        else:
            k = cols // 2
        at = row[:, None] * table_stride + k[None, :]
        c = tl.load(cos_ptr + at, mask=rope_mask, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + at, mask=rope_mask, other=0.0).to(tl.float32)
        if NEOX:
            first = cols < half
        else:
            first = (cols % 2) == 0
        s = tl.where(first[None, :], -s, s)
    if HAS_RSTD:
        rstd = tl.load(rstd_ptr + toks, mask=tok_ok, other=0.0)[:, None]
    for h in range(h0, tl.minimum(h0 + heads_per_program, heads)):  # h * head strides: small, int32 is enough
        x_rows = x_ptr + toks[:, None] * x_token_stride + h * x_head_stride
        y = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if ROPE:  # everything is loaded before the store, so out may be x
            yp = tl.load(x_rows + partner[None, :], mask=rope_mask, other=0.0).to(tl.float32)
        if NORM:
            if not HAS_RSTD:
                rstd = tl.rsqrt(tl.sum(y * y, axis=1) / width + eps)[:, None]
            w_row = w_ptr + h * param_head_stride
            b_row = b_ptr + h * param_head_stride
            w = _param(w_row, cols, col_ok, GEMMA) if HAS_W else y
            b = _param(b_row, cols, col_ok, False) if HAS_B else y
            y = _normed(y, rstd, w, b, dtype, HAS_W, HAS_B)
            if ROPE:
                wp = _param(w_row, partner, rope_ok, GEMMA) if HAS_W else y
                bp = _param(b_row, partner, rope_ok, False) if HAS_B else y
                yp = _normed(yp, rstd, wp, bp, dtype, HAS_W, HAS_B)
        if ROPE:
            y = tl.where(in_rope[None, :], y * c + yp * s, y)
        out_rows = out_ptr + toks[:, None] * out_token_stride + h * out_head_stride
        tl.store(out_rows + cols[None, :], to_dtype(y, dtype), mask=mask)
        if HAS_COPY:
            src_rows = copy_src + toks[:, None] * copy_src_token_stride + h * copy_src_head_stride
            dst_rows = copy_dst + toks[:, None] * copy_dst_token_stride + h * copy_dst_head_stride
            tl.store(dst_rows + cols[None, :], tl.load(src_rows + cols[None, :], mask=mask), mask=mask)


def head_norm_rope(*args) -> None:
    """The op schema's arguments (x, weight, ..., full_width, out[, x2, out2]): every head group checked, then
    each launched."""
    for size, group in _meta.head_groups(*args):
        launch_head_norm_rope(size, *group)


def launch_head_norm_rope(size, x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox,
                          full_width, out, also_copy=None) -> None:  # fmt: skip
    """Launch on arguments already checked; ``size`` is the per-channel parameter size the check returned.
    ``also_copy``: a (src, dst) pair of out's shape and dtype (last dim contiguous), copied by the same programs
    (the split op's v and gate: a torch copy each took as long as its share of the kernel on an H200)."""
    src = out if x is None else x
    tokens, heads, width = out.shape
    if tokens == 0 or heads == 0:
        return
    rope = rope_dim > 0
    has_w, has_b = norm and weight is not None, norm and bias is not None
    block = triton.next_power_of_2(width)
    block_t = min(triton.next_power_of_2(tokens), max(1, TILE_ELEMENTS // block))
    token_blocks = triton.cdiv(tokens, block_t)
    # Heads share a program once there are enough programs without it (each reads its tokens' table rows once).
    heads_per_program = max(1, min(heads, token_blocks * heads // MIN_PROGRAMS))
    copy_src, copy_dst = also_copy if also_copy is not None else (out, out)
    _head_norm_rope_kernel[(token_blocks, triton.cdiv(heads, heads_per_program))](
        src, src.stride(0), src.stride(1), out, out.stride(0), out.stride(1),
        weight if has_w else out, bias if has_b else out, 0 if size == width else width,
        rstd if rstd is not None else out,
        cos if rope else out, sin if rope else out, cos.stride(0) if rope else 0, cos.shape[0] if rope else 1,
        positions if rope and positions is not None else out,
        tokens, heads, heads_per_program, width, float(eps), rope_dim,
        copy_src, copy_src.stride(0), copy_src.stride(1), copy_dst, copy_dst.stride(0), copy_dst.stride(1),
        BLOCK_T=block_t, BLOCK=block, NORM=bool(norm), HAS_W=has_w, HAS_B=has_b, GEMMA=bool(gemma),
        HAS_RSTD=rstd is not None, ROPE=rope, NEOX=bool(neox), FULL_WIDTH=bool(neox and full_width),
        HAS_POS=rope and positions is not None, HAS_COPY=also_copy is not None,
        num_warps=num_warps(block_t * block),
    )  # fmt: skip
