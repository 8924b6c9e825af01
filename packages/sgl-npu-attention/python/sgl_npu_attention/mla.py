"""Absorbed multi-head latent attention (DeepSeek MLA) decode over a paged latent cache."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import check_dims
from sgl_npu_core.memory import empty

_decode_mla = torch.ops.sgl_npu_attention.decode_mla.default


def decode_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out=None) -> torch.Tensor:
    """MLA decode with the up-projections absorbed: every query head attends one shared latent KV head.

    ``out[b, h] = softmax_s((q[b, h, :Dl] . c_s + q[b, h, Dl:] . r_s) * sm_scale) @ c`` over the ``seq_lens[b]``
    keys of sequence b, where ``c_s`` is key s's latent row (``kv_nope_cache``, also its value) and ``r_s`` its rope
    row (``kv_rope_cache``).

    Parameters
    ----------
    q : [B, Hq, Dl + Dr] float32 / float16 / bfloat16, last dim contiguous (the absorbed q_nope, then q_rope)
    kv_nope_cache : [num_blocks, page_size, 1, Dl], q's dtype (DeepSeek: Dl = 512)
    kv_rope_cache : [num_blocks, page_size, 1, Dr], q's dtype, the same blocks and pages (DeepSeek: Dr = 64)
    block_table : int32 [B, max_pages]: logical page j of sequence b is block ``block_table[b, j]`` of both caches
    seq_lens : int32 [B]: KV tokens of each sequence, the new one included
    sm_scale : the softmax scale (DeepSeek: ``(qk_nope_dim + qk_rope_dim) ** -0.5`` times its yarn factor, not
        ``(Dl + Dr) ** -0.5``, so it has no default)
    out : optional preallocated [B, Hq, Dl]

    Softmax and accumulation in fp32. A sequence with no key gets zeros. Long sequences are split over the KV axis
    and the parts merged by log-sum-exp, so a batch of one still uses every core.
    """
    if out is None:
        batch, q_heads, _ = check_dims(q, 3, "q", "[batch, q_heads, latent_dim + rope_dim]")
        latent = check_dims(kv_nope_cache, 4, "kv_nope_cache", "[num_blocks, page_size, 1, latent_dim]")[-1]
        out = empty(batch, q_heads, latent, dtype=q.dtype, device=q.device)
    _decode_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, float(sm_scale), out)
    return out
