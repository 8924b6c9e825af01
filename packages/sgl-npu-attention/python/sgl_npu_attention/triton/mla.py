"""Triton absorbed-MLA decode. Programs (sequence, block of 16 or 32 query heads, split of the sequence's keys): the
heads share every latent row they load, so each block of keys is two small matmuls, ``Q K^T`` over [latent | rope] and
``P V`` with V the latent rows. A second kernel merges the splits by log-sum-exp. The split count comes from the
block table's capacity (no host sync); each sequence's keys are divided evenly among the splits on the device.
Lengths and block ids are not checked on the device (the CPU op and the reference path check them)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .. import _meta
from .paged import dot_dtype, dot_precision, merge_splits, page_slots, paged_rows, softmax_step, split_count

# Launch parameters (benchmarks/tune_triton.py times the alternatives on a GPU).
BLOCK_H = 16  # query heads per program (tl.dot needs 16 rows at least)
# When the batch alone gives WIDE_MIN_PROGRAMS programs of WIDE_BLOCK_H heads, programs take that many heads: each
# latent row loaded serves twice the heads (H200, 16 x 128 heads x 4096 keys: 309 -> 201 us); smaller batches keep
# 16 heads and more splits (1 x 128 heads: 27 us at 16, 32 us at 32).
WIDE_BLOCK_H = 32
WIDE_MIN_PROGRAMS = 64
BLOCK_N = 64  # keys per step
SPLIT_KEYS = 256  # keys per split at least, when the batch alone does not fill the device
WARPS = 8


@triton.jit
def _mla_partial_kernel(
    q_ptr, q_token_stride, q_head_stride,
    nope_ptr, nope_block_stride, nope_token_stride,
    rope_ptr, rope_block_stride, rope_token_stride,
    table_ptr, table_stride, lens_ptr, part_ptr,
    sm_scale, q_heads, page_size, dl, dr, splits,
    BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DL: tl.constexpr, BLOCK_DR: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    split = tl.program_id(2)
    offs_dl, offs_dr = tl.arange(0, BLOCK_DL), tl.arange(0, BLOCK_DR)
    head_ok = heads < q_heads
    q_rows = q_ptr + b * q_token_stride + heads[:, None] * q_head_stride
    q_nope = tl.load(q_rows + offs_dl[None, :], mask=head_ok[:, None] & (offs_dl[None, :] < dl), other=0.0)
    q_rope = tl.load(q_rows + dl + offs_dr[None, :], mask=head_ok[:, None] & (offs_dr[None, :] < dr), other=0.0)
    q_nope, q_rope = q_nope.to(DOT_DTYPE), q_rope.to(DOT_DTYPE)
    length = tl.load(lens_ptr + b)
    per_split = tl.cdiv(length, splits)
    lo = split * per_split
    hi = tl.minimum(length, lo + per_split)
    m = tl.full((BLOCK_H,), float("-inf"), tl.float32)
    l_sum = tl.zeros((BLOCK_H,), tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_DL), tl.float32)
    for n0 in range(lo, hi, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        valid = n < hi
        block, slot = page_slots(table_ptr + b * table_stride, n, valid, page_size)
        latent = paged_rows(nope_ptr, block, slot, nope_block_stride, nope_token_stride, 0, offs_dl, dl, valid)
        rope = paged_rows(rope_ptr, block, slot, rope_block_stride, rope_token_stride, 0, offs_dr, dr, valid)
        latent, rope = latent.to(DOT_DTYPE), rope.to(DOT_DTYPE)
        s = tl.dot(q_nope, tl.trans(latent), input_precision=PRECISION)
        s = tl.dot(q_rope, tl.trans(rope), acc=s, input_precision=PRECISION) * sm_scale
        s = tl.where(valid[None, :], s, float("-inf"))
        m, l_sum, acc = softmax_step(s, m, l_sum, acc, latent, PRECISION)
    # partial rows [B, Hq, splits, dl + 2]: acc, max, sum
    row = part_ptr + ((b * q_heads + heads) * splits + split) * (dl + 2)
    tl.store(row[:, None] + offs_dl[None, :], acc, mask=head_ok[:, None] & (offs_dl[None, :] < dl))
    tl.store(row + dl, m, mask=head_ok)
    tl.store(row + dl + 1, l_sum, mask=head_ok)


def _splits(batch, head_blocks, capacity) -> int:
    # enough programs for a large GPU: split only what the batch leaves idle
    return split_count(batch * head_blocks, capacity, target=256, min_keys=SPLIT_KEYS, max_splits=16)


def decode_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out) -> None:
    _meta.check_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out)
    batch, q_heads, _ = q.shape
    if batch == 0:
        return
    dl, dr = kv_nope_cache.shape[-1], kv_rope_cache.shape[-1]
    block_h = WIDE_BLOCK_H if batch * triton.cdiv(q_heads, WIDE_BLOCK_H) >= WIDE_MIN_PROGRAMS else BLOCK_H
    head_blocks = triton.cdiv(q_heads, block_h)
    splits = _splits(batch, head_blocks, block_table.shape[1] * kv_nope_cache.shape[1])
    partial = torch.empty(batch, q_heads, splits, dl + 2, dtype=torch.float32, device=q.device)
    block_dl, block_dr = max(16, triton.next_power_of_2(dl)), max(16, triton.next_power_of_2(dr))
    operand = dot_dtype(q.dtype)
    _mla_partial_kernel[(batch, head_blocks, splits)](
        q, q.stride(0), q.stride(1),
        kv_nope_cache, kv_nope_cache.stride(0), kv_nope_cache.stride(1),
        kv_rope_cache, kv_rope_cache.stride(0), kv_rope_cache.stride(1),
        block_table, block_table.stride(0), seq_lens, partial,
        float(sm_scale), q_heads, kv_nope_cache.shape[1], dl, dr, splits,
        BLOCK_H=block_h, BLOCK_N=BLOCK_N, BLOCK_DL=block_dl, BLOCK_DR=block_dr,
        DOT_DTYPE=operand, PRECISION=dot_precision(operand), num_warps=WARPS,
    )  # fmt: skip
    merge_splits(partial, None, out)
