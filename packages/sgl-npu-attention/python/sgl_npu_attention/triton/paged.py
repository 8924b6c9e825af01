"""What the paged-attention kernels share: gathering key rows through a block table, one step of the online
softmax, the dot operand dtype, how many splits of the key axis a decode launch uses, and the kernel that merges
the splits' partial rows by log-sum-exp.

Partial rows are fp32 ``[B, Hq, splits, Dv + 2]``: the split's unnormalized ``P V`` row, then its running max and
its sum of ``exp(s - max)``."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from sgl_npu_core.triton_utils import to_dtype


def dot_dtype(dtype: torch.dtype):
    """``tl.dot``'s operand dtype for ``dtype`` inputs. The interpreter's dot has no bfloat16 (numpy lacks it): there
    bf16 operands are widened to fp32, which is exact."""
    if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET", "0") == "1":
        return tl.float32
    return {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}[dtype]


def dot_precision(operand_dtype) -> str:
    # fp32 operands: full precision (no tf32), as the CPU kernels
    return "ieee" if operand_dtype == tl.float32 else "tf32"


def split_count(programs: int, capacity: int, *, target: int, min_keys: int, max_splits: int = 64) -> int:
    """Splits per (sequence, head block) so that about ``target`` programs run, each with at least ``min_keys`` of
    the block table's ``capacity``. Read off shapes only: no host sync on the sequence lengths."""
    want = max(1, triton.cdiv(target, max(programs, 1)))
    return max(1, min(want, triton.cdiv(capacity, min_keys), max_splits))


@triton.jit
def page_slots(table_row_ptr, n, valid, page_size):
    """Where keys ``n`` live: their (block, row in the block), through the request's block-table row."""
    block = tl.load(table_row_ptr + n // page_size, mask=valid, other=0).to(tl.int64)
    return block, n % page_size


@triton.jit
def paged_rows(ptr, block, slot, block_stride, token_stride, head_offset, offs, width, valid):
    """The cache rows of keys at (block, slot), columns ``offs``: zeros past ``width`` and for invalid keys."""
    rows = block * block_stride + slot * token_stride + head_offset
    return tl.load(ptr + rows[:, None] + offs[None, :], mask=valid[:, None] & (offs[None, :] < width), other=0.0)


@triton.jit
def softmax_step(s, m, l_sum, acc, v, PRECISION: tl.constexpr):
    """One key block of the online softmax: scores ``s [rows, keys]`` (-inf where masked; every row sees a key),
    values ``v [keys, Dv]`` in the dot dtype. Returns the new running max, sum and ``P V`` accumulator."""
    m_new = tl.maximum(m, tl.max(s, axis=1))
    rescale = tl.exp(m - m_new)
    p = tl.exp(s - m_new[:, None])
    l_sum = l_sum * rescale + tl.sum(p, axis=1)
    acc = tl.dot(p.to(v.dtype), v, acc=acc * rescale[:, None], input_precision=PRECISION)
    return m_new, l_sum, acc


@triton.jit
def _merge_kernel(part_ptr, sinks_ptr, out_ptr, out_token_stride, out_head_stride, q_heads, dv, splits,
                  BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr, HAS_SINKS: tl.constexpr):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    offs_s, offs_dv = tl.arange(0, BLOCK_S), tl.arange(0, BLOCK_DV)
    rows = part_ptr + ((b * q_heads + h) * splits + offs_s) * (dv + 2)
    ok = offs_s < splits
    m = tl.load(rows + dv, mask=ok, other=float("-inf"))
    l_sum = tl.load(rows + dv + 1, mask=ok, other=0.0)
    m_all = tl.max(m, axis=0)
    if HAS_SINKS:  # the sink's logit joins the max and the denominator, once
        sink = tl.load(sinks_ptr + h).to(tl.float32)
        m_all = tl.maximum(m_all, sink)
    m_all = tl.where(m_all > float("-inf"), m_all, 0.0)  # no key at all: keep exp's argument free of -inf - -inf
    w = tl.exp(m - m_all)  # a split that saw no key weighs exp(-inf) = 0
    total = tl.sum(l_sum * w, axis=0)
    if HAS_SINKS:
        total += tl.exp(sink - m_all)
    acc = tl.load(rows[:, None] + offs_dv[None, :], mask=ok[:, None] & (offs_dv[None, :] < dv), other=0.0)
    out = tl.sum(acc * w[:, None], axis=0)
    out = tl.where(total > 0, out / tl.where(total > 0, total, 1.0), 0.0)  # no key and no sink: zeros
    o_ptr = out_ptr + b * out_token_stride + h * out_head_stride + offs_dv
    tl.store(o_ptr, to_dtype(out, out_ptr.dtype.element_ty), mask=offs_dv < dv)


def merge_splits(partial: torch.Tensor, sinks: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out[b, h] = sum_s exp(m_s - M) acc_s / (sum_s exp(m_s - M) l_s (+ exp(sink_h - M)))``."""
    batch, q_heads, splits, width = partial.shape
    dv = width - 2
    _merge_kernel[(batch, q_heads)](
        partial, sinks if sinks is not None else partial, out, out.stride(0), out.stride(1), q_heads, dv, splits,
        BLOCK_S=max(2, triton.next_power_of_2(splits)), BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        HAS_SINKS=sinks is not None, num_warps=4,
    )  # fmt: skip
