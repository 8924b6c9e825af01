"""Paged attention: decode (one query token per sequence) and prefill / extend (new tokens after a cached
prefix, causal)."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import as_int, check_dims, fail
from sgl_npu_core.memory import empty

_decode_attention = torch.ops.sgl_npu_attention.decode_attention.default
_extend_attention = torch.ops.sgl_npu_attention.extend_attention.default


def _out_and_scale(q, v_cache, sm_scale, out):
    """``out`` ([tokens, q_heads, Dv], new unless given) and ``sm_scale`` (default ``D ** -0.5``), from checked dims."""
    tokens, q_heads, head_dim = check_dims(q, 3, "q", "[tokens, q_heads, head_dim]")
    if out is None:
        dv = check_dims(v_cache, 4, "v_cache", "[num_blocks, page_size, kv_heads, head_dim_v]")[-1]
        out = empty(tokens, q_heads, dv, dtype=q.dtype, device=q.device)
    if sm_scale is None:
        if head_dim <= 0:
            fail("q must have a non-empty head_dim")
        sm_scale = head_dim**-0.5
    return out, sm_scale


def decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale=None, sinks=None, sliding_window=-1,
                     out=None) -> torch.Tensor:  # fmt: skip
    """``softmax(q k^T * sm_scale) v`` for one query token per sequence over its paged KV cache.

    Parameters
    ----------
    q : [B, Hq, D] float32 / float16 / bfloat16
    k_cache, v_cache : [num_blocks, page_size, Hkv, D] and [..., Dv], q's dtype; ``Hq % Hkv == 0`` (query head
        h reads KV head ``h // (Hq / Hkv)``)
    block_table : int32 [B, max_pages]: logical page j of sequence b is block ``block_table[b, j]``
    seq_lens : int32 [B]: KV tokens of each sequence, the new one included
    sm_scale : default ``D ** -0.5``
    sinks : optional fp32 [Hq]: per-head logits that join only the softmax denominator (GPT-OSS)
    sliding_window : > 0: only the last ``sliding_window`` keys are visible
    out : optional preallocated [B, Hq, Dv]

    A sequence with no visible key (and no sink) gets zeros. Long sequences are split over the KV axis and the
    parts merged by log-sum-exp, so a batch of one still uses every core.
    """
    sliding_window = as_int(sliding_window, "sliding_window")
    out, sm_scale = _out_and_scale(q, v_cache, sm_scale, out)
    _decode_attention(q, k_cache, v_cache, block_table, seq_lens, float(sm_scale), sinks, sliding_window, out)
    return out


def extend_attention(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale=None, causal=True,
                     sinks=None, sliding_window=-1, out=None) -> torch.Tensor:  # fmt: skip
    """Prefill / extend / chunked prefill / multi-token verify over a paged KV cache.

    Parameters
    ----------
    q : [T, Hq, D]: the new tokens of every request, request b's at rows ``cu_seqlens_q[b] : cu_seqlens_q[b+1]``
    k_cache, v_cache, block_table, sinks, sliding_window : as :func:`decode_attention` (``D != Dv`` allowed)
    cu_seqlens_q : int32 [B + 1], from 0 to T
    seq_lens : int32 [B]: every key of request b, its new tokens (already written to the cache) last
    causal : query i of a request with q_len new tokens sees keys ``< seq_len - q_len + i + 1``; else all keys
    out : optional preallocated [T, Hq, Dv]
    """
    sliding_window = as_int(sliding_window, "sliding_window")
    out, sm_scale = _out_and_scale(q, v_cache, sm_scale, out)
    _extend_attention(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, float(sm_scale), bool(causal), sinks,
                      sliding_window, out)  # fmt: skip
    return out
