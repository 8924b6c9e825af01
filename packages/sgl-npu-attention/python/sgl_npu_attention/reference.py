"""Readable PyTorch references of the sgl-npu-attention ops: pages gathered through the block table, fp32 math,
results rounded once to the query's dtype. They are the specification the kernels are tested against, and the
fallback on devices without a kernel.

Paged KV cache: ``k_cache [num_blocks, page_size, num_kv_heads, head_dim]`` (``v_cache`` the same with
``head_dim_v``); logical page ``j`` of sequence ``b`` is physical block ``block_table[b, j]``; ``seq_lens[b]`` is
the number of KV tokens of sequence ``b``, the new ones included.
"""

from __future__ import annotations

import math

import torch


def gather_pages(cache: torch.Tensor, pages: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` tokens of one sequence, ``[length, heads, dim]``, from its block-table row."""
    page_size = cache.shape[1]
    used = pages[: (length + page_size - 1) // page_size].long()
    return cache[used].flatten(0, 1)[:length]


def attend(q, k, v, sm_scale, sinks=None, visible=None):
    """Softmax attention of ``q [Hq, Lq, D]`` over ``k [Hkv, L, D]``, ``v [Hkv, L, Dv]`` in fp32 (query head h
    reads KV head ``h // (Hq / Hkv)``). ``visible [Lq, L]`` masks keys; ``sinks [Hq]`` are logits that join only
    the softmax denominator. Rows that see no key and have no sink give 0."""
    group = q.shape[0] // k.shape[0]
    k, v = k.float().repeat_interleave(group, 0), v.float().repeat_interleave(group, 0)
    scores = torch.einsum("hqd,hkd->hqk", q.float(), k) * sm_scale
    if visible is not None:
        scores = scores.masked_fill(~visible, -math.inf)
    if sinks is not None:  # one more column: the sink's logit, which weighs no value
        sink = sinks.float().view(-1, 1, 1).expand(-1, scores.shape[1], 1)
        scores = torch.cat([scores, sink], dim=-1)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row of -inf only: nothing to attend
    if sinks is not None:
        probs = probs[..., :-1]
    return torch.einsum("hqk,hkd->hqd", probs, v)


def decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale=None, sinks=None, sliding_window=-1):
    """One query token per sequence: ``q [B, Hq, D]`` -> ``[B, Hq, Dv]`` over the sequence's ``seq_lens[b]`` keys
    (with ``sliding_window > 0`` only the last ``sliding_window`` of them); MHA / GQA / MQA by ``Hq % Hkv``."""
    sm_scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    out = torch.zeros(q.shape[0], q.shape[1], v_cache.shape[-1], dtype=torch.float32, device=q.device)
    for b in range(q.shape[0]):
        length = int(seq_lens[b])
        k = gather_pages(k_cache, block_table[b], length).transpose(0, 1)  # [Hkv, L, D]
        v = gather_pages(v_cache, block_table[b], length).transpose(0, 1)
        visible = torch.ones(1, length, dtype=torch.bool, device=q.device)
        if sliding_window > 0:
            visible[:, : max(0, length - sliding_window)] = False
        out[b] = attend(q[b].unsqueeze(1), k, v, sm_scale, sinks, visible).squeeze(1)
    return out.to(q.dtype)
