"""Triton paged attention: one program per (query token, query head), online softmax over blocks of the token's
keys [lo, hi) gathered through its request's block-table row. Decode is one token per request; extend gives each
token its causal limit. Lengths and block ids are not checked on the device (the CPU op and the reference path
check them: that needs the values on the host)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from sgl_npu_core.triton_utils import to_dtype

from .. import _meta


@triton.jit
def _attention_kernel(
    q_ptr, q_token_stride, q_head_stride,
    k_ptr, k_block_stride, k_token_stride, k_head_stride,
    v_ptr, v_block_stride, v_token_stride, v_head_stride,
    table_ptr, table_stride, req_ptr, lo_ptr, hi_ptr, sinks_ptr, out_ptr, out_token_stride, out_head_stride,
    sm_scale, group, page_size, d, dv,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, HAS_SINKS: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1).to(tl.int64)
    b = tl.load(req_ptr + t)
    hk = h // group
    offs_d, offs_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + t * q_token_stride + h * q_head_stride + offs_d, mask=offs_d < d, other=0.0).to(tl.float32)
    q = q * sm_scale
    start = tl.load(lo_ptr + t)
    length = tl.load(hi_ptr + t)
    if HAS_SINKS:
        m = tl.load(sinks_ptr + h).to(tl.float32)  # the sink joins the max and, below, the sum
        l_sum = tl.full((), 1.0, tl.float32)
    else:
        m = tl.full((), float("-inf"), tl.float32)
        l_sum = tl.full((), 0.0, tl.float32)
    acc = tl.zeros((BLOCK_DV,), tl.float32)
    for n0 in range(start, length, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        valid = n < length
        block = tl.load(table_ptr + b * table_stride + n // page_size, mask=valid, other=0).to(tl.int64)
        row = block * k_block_stride + (n % page_size) * k_token_stride + hk * k_head_stride
        k = tl.load(k_ptr + row[:, None] + offs_d[None, :], mask=valid[:, None] & (offs_d[None, :] < d), other=0.0)
        s = tl.sum(k.to(tl.float32) * q[None, :], axis=1)
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))
        rescale = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        v_row = block * v_block_stride + (n % page_size) * v_token_stride + hk * v_head_stride
        v = tl.load(v_ptr + v_row[:, None] + offs_dv[None, :], mask=valid[:, None] & (offs_dv[None, :] < dv),
                    other=0.0)  # fmt: skip
        acc = acc * rescale + tl.sum(p[:, None] * v.to(tl.float32), axis=0)
        l_sum = l_sum * rescale + tl.sum(p, axis=0)
        m = m_new
    out = tl.where(l_sum > 0, acc / tl.where(l_sum > 0, l_sum, 1.0), 0.0)
    o_ptr = out_ptr + t * out_token_stride + h * out_head_stride + offs_dv
    tl.store(o_ptr, to_dtype(out, out_ptr.dtype.element_ty), mask=offs_dv < dv)


def _launch(q, k_cache, v_cache, block_table, query_req, key_lo, key_hi, sm_scale, sinks, out) -> None:
    tokens, q_heads, d = q.shape
    if tokens == 0:
        return
    dv = v_cache.shape[-1]
    _attention_kernel[(tokens, q_heads)](
        q, q.stride(0), q.stride(1),
        k_cache, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache, v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_table, block_table.stride(0), query_req, key_lo, key_hi, sinks if sinks is not None else q,
        out, out.stride(0), out.stride(1),
        float(sm_scale), q_heads // k_cache.shape[2], k_cache.shape[1], d, dv,
        BLOCK_N=32, BLOCK_D=triton.next_power_of_2(d), BLOCK_DV=triton.next_power_of_2(dv),
        HAS_SINKS=sinks is not None, num_warps=4,
    )  # fmt: skip


def _window(key_hi, sliding_window):
    return (key_hi - sliding_window).clamp(min=0) if sliding_window > 0 else torch.zeros_like(key_hi)


def decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out) -> None:
    _meta.check_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out)
    key_hi = seq_lens.long()
    req = torch.arange(q.shape[0], device=q.device)
    _launch(q, k_cache, v_cache, block_table, req, _window(key_hi, sliding_window), key_hi, sm_scale, sinks, out)


def extend_attention(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks,
                     sliding_window, out) -> None:  # fmt: skip
    _meta.check_extend(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks,
                       sliding_window, out)  # fmt: skip
    # Each token's request and key range, computed on the device (output_size given: no host sync).
    tokens = q.shape[0]
    cu = cu_seqlens_q.long()
    q_lens = cu[1:] - cu[:-1]
    req = torch.repeat_interleave(torch.arange(len(q_lens), device=q.device), q_lens, output_size=tokens)
    lens = seq_lens.long()[req]
    if causal:
        key_hi = lens - q_lens[req] + (torch.arange(tokens, device=q.device) - cu[req]) + 1
    else:
        key_hi = lens
    _launch(q, k_cache, v_cache, block_table, req, _window(key_hi, sliding_window), key_hi, sm_scale, sinks, out)
