"""Test and benchmark inputs: paged KV caches whose pages sit at random blocks."""

from __future__ import annotations

import torch


def paged_cache(seq_lens, page_size, kv_heads, head_dim, head_dim_v, dtype, spare_blocks=3):
    """``(k_cache, v_cache, block_table, seq_lens)`` for sequences of ``seq_lens`` tokens, every sequence's pages
    at randomly permuted blocks (plus ``spare_blocks`` no sequence uses). Table entries past a sequence's pages are
    -1, so reading them would fail the block check."""
    pages = [(n + page_size - 1) // page_size for n in seq_lens]
    blocks = sum(pages) + spare_blocks
    k_cache = torch.randn(blocks, page_size, kv_heads, head_dim).to(dtype)
    v_cache = torch.randn(blocks, page_size, kv_heads, head_dim_v).to(dtype)
    order = torch.randperm(blocks, device=k_cache.device).to(torch.int32)
    table = torch.full((len(seq_lens), max(pages + [1]) + 1), -1, dtype=torch.int32, device=k_cache.device)
    used = 0
    for b, n in enumerate(pages):
        table[b, :n] = order[used : used + n]
        used += n
    return k_cache, v_cache, table, torch.tensor(seq_lens, dtype=torch.int32, device=k_cache.device)
