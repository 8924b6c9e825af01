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


def extend_attention(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale=None, causal=True,
                     sinks=None, sliding_window=-1):  # fmt: skip
    """``q [T, Hq, D]`` holds each request's new tokens (``cu_seqlens_q [B+1]``), the last ``q_len`` of its
    ``seq_lens[b]`` keys: query ``i`` sees keys ``< seq_len - q_len + i + 1`` (all of them without ``causal``),
    and with ``sliding_window > 0`` only the last ``sliding_window`` of those. Returns ``[T, Hq, Dv]``."""
    sm_scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
    out = torch.zeros(q.shape[0], q.shape[1], v_cache.shape[-1], dtype=torch.float32, device=q.device)
    for b in range(len(seq_lens)):
        start, end, length = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(seq_lens[b])
        k = gather_pages(k_cache, block_table[b], length).transpose(0, 1)  # [Hkv, L, D]
        v = gather_pages(v_cache, block_table[b], length).transpose(0, 1)
        i = torch.arange(end - start, device=q.device).unsqueeze(1)
        j = torch.arange(length, device=q.device).unsqueeze(0)
        limit = length - (end - start) + i + 1 if causal else torch.full_like(i, length)
        visible = j < limit
        if sliding_window > 0:
            visible &= j >= limit - sliding_window
        out[start:end] = attend(q[start:end].transpose(0, 1), k, v, sm_scale, sinks, visible).transpose(0, 1)
    return out.to(q.dtype)


def decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale=None, sinks=None, sliding_window=-1):
    """One query token per sequence: ``q [B, Hq, D]`` -> ``[B, Hq, Dv]`` over the sequence's ``seq_lens[b]`` keys
    (with ``sliding_window > 0`` only the last ``sliding_window`` of them); MHA / GQA / MQA by ``Hq % Hkv``."""
    cu = torch.arange(q.shape[0] + 1, device=q.device)
    return extend_attention(q, k_cache, v_cache, block_table, cu, seq_lens, sm_scale, True, sinks, sliding_window)


def decode_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale):
    """Absorbed MLA decode, one query token per sequence: key ``s`` of sequence ``b`` is its latent row
    ``c = kv_nope_cache[...]`` [Dl] joined with its rope row ``r = kv_rope_cache[...]`` [Dr]; every query head attends
    the same keys, and the latent rows are also the values:
    ``out[b, h] = softmax_s((q[b, h, :Dl] . c_s + q[b, h, Dl:] . r_s) * sm_scale) @ c``, ``[B, Hq, Dl]``."""
    dl = kv_nope_cache.shape[-1]
    out = torch.zeros(q.shape[0], q.shape[1], dl, dtype=torch.float32, device=q.device)
    for b in range(q.shape[0]):
        length = int(seq_lens[b])
        if length == 0:
            continue
        latent = gather_pages(kv_nope_cache, block_table[b], length)[:, 0].float()  # [L, Dl]
        keys = torch.cat([latent, gather_pages(kv_rope_cache, block_table[b], length)[:, 0].float()], dim=-1)
        probs = torch.softmax(q[b].float() @ keys.T * sm_scale, dim=-1)  # [Hq, L]
        out[b] = probs @ latent
    return out.to(q.dtype)


def indexer_scores(q, keys, weights):
    """``score[t, s] = sum_h w[t, h] * relu(q[t, h] . k[s])`` in fp32 for ``q [T, N1, D]``, ``keys [L, D]``,
    ``weights [T, N1]``: ``[T, L]``."""
    dots = torch.einsum("thd,sd->ths", q.float(), keys.float()).relu()
    return (dots * weights.float().unsqueeze(-1)).sum(1)


def lightning_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count=2048):
    """Per query token, the positions (within its sequence) of its ``sparse_count`` best visible keys by
    :func:`indexer_scores`, best first, equal scores by lower position, ``-1`` past the visible keys: int32
    ``[T, sparse_count]``. Request b's ``q_len`` query tokens are the last of its ``seq_lens[b]`` keys; query i sees
    keys ``< seq_len - q_len + i + 1``. A NaN score ranks as ``+inf``."""
    out = torch.full((q.shape[0], sparse_count), -1, dtype=torch.int32, device=q.device)
    for b in range(len(seq_lens)):
        start, end, length = int(cu_seqlens_q[b]), int(cu_seqlens_q[b + 1]), int(seq_lens[b])
        if end == start:
            continue
        keys = gather_pages(k_cache, block_table[b], length)[:, 0]
        scores = indexer_scores(q[start:end], keys, weights[start:end])
        scores = torch.where(scores.isnan(), math.inf, scores) + 0.0  # + 0: -0 ties with +0
        for i in range(end - start):
            visible = length - (end - start) + i + 1
            order = torch.sort(scores[i, :visible], descending=True, stable=True).indices[:sparse_count]
            out[start + i, : len(order)] = order.to(torch.int32)
    return out


def batch_matmul_transpose(a, b):
    """``out[m, h] = a[m, h] @ b[h]`` for ``a [M, B, K]``, ``b [B, K, N]``: ``[M, B, N]``, fp32 math."""
    return torch.bmm(a.float().transpose(0, 1), b.float()).transpose(0, 1).to(a.dtype)
