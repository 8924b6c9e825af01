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


# --- mla_preprocess: the fused DeepSeek MLA prolog --------------------------------------------------------------


def rms_norm(x, gamma, beta=None, eps=1e-6):
    """``x * rsqrt(mean(x^2) + eps) * gamma (+ beta)`` over the last dim in fp32, rounded to x's dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps) * gamma.float()
    return (y if beta is None else y + beta.float()).to(x.dtype)


def quantize_int8(x, quant_mode, quant_scale=None, quant_offset=None):
    """int8 codes of ``x [N, D]`` and the per-row fp32 scale that dequantizes them (ones for the per-tensor mode,
    whose scale is folded into the weights' descale). ``per_token_quant_symm``: ``s = max|x_t| / 127``,
    ``round(x / s)``; ``per_tensor_quant_asymm``: ``clamp(round(x / quant_scale + quant_offset), -128, 127)``.
    Rounding is half to even."""
    xf = x.float()
    if quant_mode == "per_token_quant_symm":
        scale = xf.abs().amax(-1) / 127.0
        codes = torch.where(scale[:, None] > 0, xf / scale[:, None], torch.zeros_like(xf)).round()
        return codes.clamp(-128, 127).to(torch.int8), scale
    codes = (xf / quant_scale.float().reshape(()) + quant_offset.float().reshape(())).round().clamp(-128, 127)
    return codes.to(torch.int8), torch.ones(x.shape[0], device=x.device)


def int8_matmul(codes, weight, descale, row_scale, bias, dtype):
    """``(codes @ weight^T (+ bias)) * descale[c] * row_scale[t]`` rounded to dtype: int8 [N, K] x int8 [C, K],
    exact integer sums (fp64), int32 ``bias [C]``, fp32 per-channel ``descale [C]``."""
    acc = codes.double() @ weight.double().T
    if bias is not None:
        acc = acc + bias.double()
    return (acc.float() * descale.float() * row_scale[:, None]).to(dtype)


def rope_half(x, cos, sin):
    """Rotate-half (NeoX) RoPE of ``x [N, ..., D]`` with per-token ``cos``, ``sin [N, D]``, fp32, to x's dtype."""
    shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
    xf, c, s = x.float(), cos.float().view(shape), sin.float().view(shape)
    x1, x2 = xf.chunk(2, dim=-1)
    return (xf * c + torch.cat([-x2, x1], dim=-1) * s).to(x.dtype)


def mla_preprocess(hiddenState, gamma0, beta0, wdqkv, descale0, gamma1, beta1, wuq, descale1, gamma2, cos, sin, wuk,
                   kv_cache, kv_cache_rope, slotmapping, quant_scale0, quant_offset0, bias0, quant_scale1,
                   quant_offset1, bias1, quant_mode="per_token_quant_symm", eps=1e-6):  # fmt: skip
    """The DeepSeek MLA prolog for ``N`` tokens, plain ND layouts (names as upstream's ``mla_preprocess``):

    1. ``hiddenState [N, hidden]`` (already normed: gamma0 / beta0 are unused) is int8-quantized (``quant_mode``;
       per-tensor with quant_scale0 / quant_offset0), multiplied by ``wdqkv`` int8 ``[kv_lora + rope + q_lora,
       hidden]`` (+ int32 ``bias0`` in the per-tensor mode, where it folds in the offset) and dequantized with fp32
       ``descale0``; the result splits into ``[kv_latent | k_pe | q_a]``.
    2. ``q_a``: RMSNorm(gamma1) + beta1, quantized again (quant_scale1 / quant_offset1), times ``wuq`` int8
       ``[heads * (nope + rope), q_lora]`` (+ bias1), dequantized (descale1): per head ``[q_nope | q_pe]``.
    3. ``q_out0 = q_nope @ wuk[h]`` (``wuk [heads, nope, kv_lora]``), ``q_out1 = rope_half(q_pe)``.
    4. RMSNorm(gamma2) of kv_latent goes to ``kv_cache [blocks, page, 1, kv_lora]`` and rope_half(k_pe) to
       ``kv_cache_rope [blocks, page, 1, rope]`` at ``slotmapping[t]`` (block ``slot // page``, row ``slot % page``).

    Every stage rounds to hiddenState's dtype. Returns ``(q_out0, kv_cache, q_out1, kv_cache_rope)``, the caches
    written in place."""
    dtype, n = hiddenState.dtype, hiddenState.shape[0]
    kv_lora, rope, heads, nope = gamma2.shape[0], cos.shape[-1], wuk.shape[0], wuk.shape[1]
    symm = quant_mode == "per_token_quant_symm"
    codes, scale = quantize_int8(hiddenState, quant_mode, quant_scale0, quant_offset0)
    mm1 = int8_matmul(codes, wdqkv, descale0, scale, None if symm else bias0, dtype)
    latent, k_pe, q_a = mm1.split([kv_lora, rope, mm1.shape[1] - kv_lora - rope], dim=-1)
    codes, scale = quantize_int8(rms_norm(q_a, gamma1, beta1, eps), quant_mode, quant_scale1, quant_offset1)
    q = int8_matmul(codes, wuq, descale1, scale, None if symm else bias1, dtype).view(n, heads, nope + rope)
    q_out0 = batch_matmul_transpose(q[..., :nope], wuk)
    q_out1 = rope_half(q[..., nope:], cos, sin)
    page, slots = kv_cache.shape[1], slotmapping.long()
    kv_cache[slots // page, slots % page, 0] = rms_norm(latent, gamma2, eps=eps)
    kv_cache_rope[slots // page, slots % page, 0] = rope_half(k_pe, cos, sin)
    return q_out0, kv_cache, q_out1, kv_cache_rope
