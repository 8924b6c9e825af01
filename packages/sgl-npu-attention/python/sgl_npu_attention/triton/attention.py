"""Triton paged attention over K/V rows gathered through each request's block-table row, with the online softmax.

decode: programs (sequence, KV head and block of its query heads, split of the sequence's keys). The query heads of
one KV head share every K and V row they load, so each block of keys is two small matmuls (``Q K^T``, ``P V``);
the splits keep a large GPU busy at small batches and are merged by log-sum-exp (``paged.py``).
extend: programs (block of one request's new tokens, query head), flash-attention style: every key block is a
``Q K^T`` and a ``P V`` matmul, each query row masked to its own causal / sliding-window key range.

Lengths and block ids are not checked on the device (the CPU op and the reference path check them: that needs the
values on the host)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from sgl_npu_core.triton_utils import to_dtype

from .. import _meta
from .paged import dot_dtype, dot_precision, merge_splits, page_slots, paged_rows, softmax_step, split_count

# Launch parameters (benchmarks/tune_triton.py times the alternatives on a GPU).
DECODE_BLOCK_N = 32  # keys per step
DECODE_MIN_KEYS = 256  # keys per split at least
DECODE_PROGRAMS = 512  # programs a decode launch aims for (a few per multiprocessor)
DECODE_WARPS = 4
EXTEND_BLOCK_M = 128  # new tokens per program
EXTEND_BLOCK_N = 32  # keys per step
EXTEND_WARPS = 4


@triton.jit
def _decode_partial_kernel(
    q_ptr, q_token_stride, q_head_stride,
    k_ptr, k_block_stride, k_token_stride, k_head_stride,
    v_ptr, v_block_stride, v_token_stride, v_head_stride,
    table_ptr, table_stride, lens_ptr, part_ptr,
    sm_scale, q_heads, group, group_blocks, page_size, d, dv, splits, window,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    hk = tl.program_id(1) // group_blocks
    in_group = (tl.program_id(1) % group_blocks) * BLOCK_H + tl.arange(0, BLOCK_H)
    heads = hk * group + in_group
    head_ok = in_group < group
    split = tl.program_id(2)
    offs_d, offs_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + b * q_token_stride + heads[:, None] * q_head_stride + offs_d[None, :],
                mask=head_ok[:, None] & (offs_d[None, :] < d), other=0.0).to(DOT_DTYPE)  # fmt: skip
    length = tl.load(lens_ptr + b)
    first = tl.where(window > 0, tl.maximum(length - window, 0), 0)  # the sliding window's first key
    per_split = tl.cdiv(length - first, splits)
    lo = first + split * per_split
    hi = tl.minimum(length, lo + per_split)
    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    l_sum = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_DV), tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        valid = n < hi
        block, slot = page_slots(table_ptr + b * table_stride, n, valid, page_size)
        k = paged_rows(k_ptr, block, slot, k_block_stride, k_token_stride, hk * k_head_stride, offs_d, d, valid)
        v = paged_rows(v_ptr, block, slot, v_block_stride, v_token_stride, hk * v_head_stride, offs_dv, dv, valid)
        s = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=PRECISION) * sm_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m, l_sum, acc = softmax_step(s, m, l_sum, acc, v.to(DOT_DTYPE), PRECISION)
    row = part_ptr + ((b * q_heads + heads) * splits + split) * (dv + 2)
    tl.store(row[:, None] + offs_dv[None, :], acc, mask=head_ok[:, None] & (offs_dv[None, :] < dv))
    tl.store(row + dv, m, mask=head_ok)
    tl.store(row + dv + 1, l_sum, mask=head_ok)


def _decode_shape(q_heads, kv_heads, batch, capacity):
    """(query heads per program, head blocks per KV head, splits)."""
    group = q_heads // kv_heads
    block_h = min(64, max(16, triton.next_power_of_2(group)))  # tl.dot needs 16 rows
    group_blocks = triton.cdiv(group, block_h)
    programs = batch * kv_heads * group_blocks
    return block_h, group_blocks, split_count(programs, capacity, target=DECODE_PROGRAMS, min_keys=DECODE_MIN_KEYS)


def decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out) -> None:
    _meta.check_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out)
    batch, q_heads, d = q.shape
    if batch == 0:
        return
    kv_heads, dv = k_cache.shape[2], v_cache.shape[-1]
    block_h, group_blocks, splits = _decode_shape(q_heads, kv_heads, batch, block_table.shape[1] * k_cache.shape[1])
    partial = torch.empty(batch, q_heads, splits, dv + 2, dtype=torch.float32, device=q.device)
    operand = dot_dtype(q.dtype)
    _decode_partial_kernel[(batch, kv_heads * group_blocks, splits)](
        q, q.stride(0), q.stride(1),
        k_cache, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache, v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table, block_table.stride(0), seq_lens, partial,
        float(sm_scale), q_heads, q_heads // kv_heads, group_blocks, k_cache.shape[1], d, dv, splits,
        int(sliding_window),
        BLOCK_H=block_h, BLOCK_N=DECODE_BLOCK_N, BLOCK_D=max(16, triton.next_power_of_2(d)),
        BLOCK_DV=max(16, triton.next_power_of_2(dv)), DOT_DTYPE=operand, PRECISION=dot_precision(operand),
        num_warps=DECODE_WARPS,
    )  # fmt: skip
    merge_splits(partial, sinks, out)


@triton.jit
def _extend_step(
    q, n0, hi, key_lo, key_hi, m, l_sum, acc, table_row_ptr, page_size,
    k_ptr, k_block_stride, k_token_stride, v_ptr, v_block_stride, v_token_stride, offs_d, offs_dv, d, dv, scale2,
    MASKED: tl.constexpr, BLOCK_N: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    """One block of keys ``[n0, n0 + BLOCK_N)`` of the base-2 online softmax. Unmasked blocks are whole and seen by
    every row: they skip the range mask and the guard for rows that have seen nothing yet."""
    n = n0 + tl.arange(0, BLOCK_N)
    valid = n < hi
    block, slot = page_slots(table_row_ptr, n, valid, page_size)
    k = paged_rows(k_ptr, block, slot, k_block_stride, k_token_stride, 0, offs_d, d, valid)
    v = paged_rows(v_ptr, block, slot, v_block_stride, v_token_stride, 0, offs_dv, dv, valid)
    s = tl.dot(q, tl.trans(k.to(DOT_DTYPE)), input_precision=PRECISION) * scale2
    if MASKED:
        visible = (n[None, :] >= key_lo[:, None]) & (n[None, :] < key_hi[:, None])
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, axis=1))
    if MASKED:  # a row with nothing visible yet: exp2(-inf) = 0, no NaN
        base = tl.where(m_new > float("-inf"), m_new, 0.0)
    else:
        base = m_new
    rescale = tl.math.exp2(m - base)
    p = tl.math.exp2(s - base[:, None])
    l_sum = l_sum * rescale + tl.sum(p, axis=1)
    acc = tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), acc=acc * rescale[:, None], input_precision=PRECISION)
    return m_new, l_sum, acc


@triton.jit
def _extend_kernel(
    q_ptr, q_token_stride, q_head_stride,
    k_ptr, k_block_stride, k_token_stride, k_head_stride,
    v_ptr, v_block_stride, v_token_stride, v_head_stride,
    table_ptr, table_stride, cu_ptr, lens_ptr, prog_req_ptr, prog_row_ptr, sinks_ptr,
    out_ptr, out_token_stride, out_head_stride,
    sm_scale, group, page_size, d, dv, window,
    CAUSAL: tl.constexpr, HAS_SINKS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    # Blocks in reverse: a request's last blocks see the most keys, and starting them first keeps the tail short.
    prog = tl.num_programs(1) - 1 - tl.program_id(1)
    h = tl.program_id(0).to(tl.int64)
    hk = h // group
    r = tl.load(prog_req_ptr + prog).to(tl.int64)
    q_start = tl.load(cu_ptr + r)
    q_len = tl.load(cu_ptr + r + 1) - q_start
    pos = tl.load(prog_row_ptr + prog) + tl.arange(0, BLOCK_M)  # rows of this program within the request
    row_ok = pos < q_len  # a padding program (past the last request's blocks) has rows beyond its q_len
    t = (q_start + pos).to(tl.int64)
    offs_d, offs_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + t[:, None] * q_token_stride + h * q_head_stride + offs_d[None, :],
                mask=row_ok[:, None] & (offs_d[None, :] < d), other=0.0).to(DOT_DTYPE)  # fmt: skip
    seq_len = tl.load(lens_ptr + r)
    if CAUSAL:
        key_hi = seq_len - q_len + pos + 1
    else:
        key_hi = tl.zeros((BLOCK_M,), tl.int32) + seq_len
    key_lo = tl.where(window > 0, tl.maximum(key_hi - window, 0), 0)
    # The program's key range. A program without rows gets [0, 0): a sentinel like INT32_MAX would overflow when
    # the compiled loop's software pipeline adds the step to it (an illegal address on the GPU).
    hi = tl.max(tl.where(row_ok, key_hi, 0), axis=0)
    lo = tl.min(tl.where(row_ok, key_lo, hi), axis=0)
    # [full_lo, full_hi): whole blocks that every row sees in full, run without the mask; the blocks before and
    # after it (a sliding window's start, the causal diagonal) are masked.
    seen_by_all_lo = tl.max(tl.where(row_ok, key_lo, lo), axis=0)
    seen_by_all_hi = tl.min(tl.where(row_ok, key_hi, hi), axis=0)
    full_lo = lo + tl.cdiv(seen_by_all_lo - lo, BLOCK_N) * BLOCK_N
    full_hi = tl.maximum(full_lo, full_lo + (seen_by_all_hi - full_lo) // BLOCK_N * BLOCK_N)
    # Scores in base 2 (log2(e) folded into the scale): exp2 is the hardware's instruction, exp one more multiply.
    scale2 = sm_scale * 1.4426950408889634
    if HAS_SINKS:  # the sink's logit joins the max and, below, the sum
        m = tl.zeros((BLOCK_M,), tl.float32) + tl.load(sinks_ptr + h).to(tl.float32) * 1.4426950408889634
        l_sum = tl.full((BLOCK_M,), 1.0, tl.float32)
    else:
        m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
        l_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), tl.float32)
    table_row = table_ptr + r * table_stride
    k_head, v_head = k_ptr + hk * k_head_stride, v_ptr + hk * v_head_stride
    for n0 in range(full_lo, full_hi, BLOCK_N):
        m, l_sum, acc = _extend_step(q, n0, hi, key_lo, key_hi, m, l_sum, acc, table_row, page_size,
                                     k_head, k_block_stride, k_token_stride, v_head, v_block_stride, v_token_stride,
                                     offs_d, offs_dv, d, dv, scale2, False, BLOCK_N, DOT_DTYPE, PRECISION)  # fmt: skip
    # then the masked blocks, before and after (the softmax's order of blocks does not matter)
    before = (full_lo - lo) // BLOCK_N
    for i in range(0, before + tl.cdiv(hi - full_hi, BLOCK_N)):
        n0 = tl.where(i < before, lo + i * BLOCK_N, full_hi + (i - before) * BLOCK_N)
        m, l_sum, acc = _extend_step(q, n0, hi, key_lo, key_hi, m, l_sum, acc, table_row, page_size,
                                     k_head, k_block_stride, k_token_stride, v_head, v_block_stride, v_token_stride,
                                     offs_d, offs_dv, d, dv, scale2, True, BLOCK_N, DOT_DTYPE, PRECISION)  # fmt: skip
    out = tl.where(l_sum[:, None] > 0, acc / tl.where(l_sum > 0, l_sum, 1.0)[:, None], 0.0)
    o_ptr = out_ptr + t[:, None] * out_token_stride + h * out_head_stride + offs_dv[None, :]
    tl.store(o_ptr, to_dtype(out, out_ptr.dtype.element_ty), mask=row_ok[:, None] & (offs_dv[None, :] < dv))


def _extend_programs(cu_seqlens_q, tokens):
    """Each program's (request, first row within it): request b has ceil(q_len_b / BLOCK_M) blocks. The grid is
    sized by an upper bound, T / BLOCK_M + B, so nothing is read back to the host; the programs past the last
    block get the last request and rows past its q_len (they write nothing)."""
    batch = cu_seqlens_q.shape[0] - 1
    cu = cu_seqlens_q.long()
    blocks_cu = torch.zeros(batch + 1, dtype=torch.long, device=cu.device)
    torch.cumsum((cu[1:] - cu[:-1] + EXTEND_BLOCK_M - 1) // EXTEND_BLOCK_M, 0, out=blocks_cu[1:])
    programs = tokens // EXTEND_BLOCK_M + batch
    prog = torch.arange(programs, device=cu.device)
    req = (torch.searchsorted(blocks_cu, prog, right=True) - 1).clamp(max=batch - 1)
    row = (prog - blocks_cu[req]) * EXTEND_BLOCK_M
    return programs, req, row


def extend_attention(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks,
                     sliding_window, out) -> None:  # fmt: skip
    _meta.check_extend(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks,
                       sliding_window, out)  # fmt: skip
    tokens, q_heads, d = q.shape
    if tokens == 0:
        return
    dv = v_cache.shape[-1]
    programs, req, row = _extend_programs(cu_seqlens_q, tokens)
    operand = dot_dtype(q.dtype)
    _extend_kernel[(q_heads, programs)](
        q, q.stride(0), q.stride(1),
        k_cache, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache, v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table, block_table.stride(0), cu_seqlens_q, seq_lens, req, row, sinks if sinks is not None else q,
        out, out.stride(0), out.stride(1),
        float(sm_scale), q_heads // k_cache.shape[2], k_cache.shape[1], d, dv, int(sliding_window),
        CAUSAL=bool(causal), HAS_SINKS=sinks is not None, BLOCK_M=EXTEND_BLOCK_M, BLOCK_N=EXTEND_BLOCK_N,
        BLOCK_D=max(16, triton.next_power_of_2(d)), BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        DOT_DTYPE=operand, PRECISION=dot_precision(operand), num_warps=EXTEND_WARPS,
    )  # fmt: skip
