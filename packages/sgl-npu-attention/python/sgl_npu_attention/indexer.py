"""DeepSeek-V3.2 sparse-attention indexer ("lightning indexer"): which cached tokens each query token attends."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import as_int, check_dims, fail

_lightning_indexer = torch.ops.sgl_npu_attention.lightning_indexer.default


def lightning_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count=2048,
                      out=None) -> torch.Tensor:  # fmt: skip
    """The ``sparse_count`` best keys of each query token by ``score[s] = sum_h w[t, h] * relu(q[t, h] . k[s])``.

    Request b has ``q_len = cu_seqlens_q[b + 1] - cu_seqlens_q[b]`` new query tokens, the last ``q_len`` of its
    ``seq_lens[b]`` tokens (already written to the cache); its query i sees keys ``s < seq_lens[b] - q_len + i + 1``
    (itself and everything before it).

    Returns int32 ``[T, sparse_count]``: row t holds key **positions within the token's own sequence** (``s`` in
    ``0 .. seq_lens[b] - 1``, the index into the request's logical key order, not a cache slot or block), ordered by
    descending score, equal scores by ascending position (so results are deterministic). When a token sees fewer
    than ``sparse_count`` keys, the rest of its row is ``-1``. Scores are computed in fp32; a NaN score ranks as
    ``+inf``, and ``-0`` ties with ``+0``.

    Parameters
    ----------
    q : [T, N1, D] float32 / float16 / bfloat16 (DeepSeek-V3.2: 64 heads of 128), last dim contiguous
    k_cache : [num_blocks, page_size, 1, D], q's dtype: the indexer's paged key cache (one head)
    weights : [T, N1], float32 or q's dtype: per-token head weights (any scaling already applied)
    block_table : int32 [B, max_pages]: logical page j of request b is block ``block_table[b, j]``
    cu_seqlens_q : int32 [B + 1], from 0 to T: request b's query tokens are rows ``cu_seqlens_q[b] : [b + 1]``
    seq_lens : int32 [B]: every key of request b, its new tokens included
    sparse_count : keys kept per token (DeepSeek-V3.2: 2048)
    out : optional preallocated int32 [T, sparse_count]
    """
    sparse_count = as_int(sparse_count, "sparse_count")
    if out is None:
        if sparse_count <= 0:  # it sizes out
            fail(f"sparse_count must be positive, got {sparse_count}")
        tokens = check_dims(q, 3, "q", "[tokens, heads, head_dim]")[0]
        out = torch.empty(tokens, sparse_count, dtype=torch.int32, device=q.device)
    _lightning_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count, out)
    return out
