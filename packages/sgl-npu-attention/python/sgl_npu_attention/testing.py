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


def prolog_inputs(tokens, hidden, q_lora, kv_lora, rope, nope, heads, page_size, blocks, dtype, quant_mode):
    """Positional arguments of ``mla_preprocess`` (hiddenState ... bias1): int8 weights whose dequantized values are
    ~N(0, 1/fan_in), so every stage stays O(1); caches filled with 7 (a value no write produces by chance) and
    distinct slots in random order. Per-tensor mode: the descales include the activation scale and the int32
    biases cancel the activation offset, as a calibrated checkpoint would."""
    per_tensor = quant_mode == "per_tensor_quant_asymm"
    mm1, mm2 = kv_lora + rope + q_lora, heads * (nope + rope)

    def weight(out_dim, in_dim, act_scale, act_offset):
        w = torch.randint(-127, 128, (out_dim, in_dim), dtype=torch.int8)
        descale = (torch.rand(out_dim) + 0.5) / (127 * in_dim**0.5) * (act_scale if per_tensor else 1.0)
        bias = (-act_offset * w.int().sum(1)).int()
        return w, descale.float(), bias

    scale0, offset0, scale1, offset1 = 4.0 / 127, 3, 6.0 / 127, -2
    wdqkv, descale0, bias0 = weight(mm1, hidden, scale0, offset0)
    wuq, descale1, bias1 = weight(mm2, q_lora, scale1, offset1)
    angle = torch.rand(tokens, rope // 2) * 6.3
    cos, sin = torch.cat([angle.cos()] * 2, -1).to(dtype), torch.cat([angle.sin()] * 2, -1).to(dtype)
    return (
        torch.randn(tokens, hidden).to(dtype),  # hiddenState
        torch.ones(hidden, dtype=dtype),  # gamma0 (unused)
        torch.zeros(hidden, dtype=dtype),  # beta0 (unused)
        wdqkv,
        descale0,
        (torch.rand(q_lora) + 0.5).to(dtype),  # gamma1
        (torch.randn(q_lora) * 0.1).to(dtype),  # beta1
        wuq,
        descale1,
        (torch.rand(kv_lora) + 0.5).to(dtype),  # gamma2
        cos,
        sin,
        (torch.randn(heads, nope, kv_lora) / nope**0.5).to(dtype),  # wuk
        torch.full((blocks, page_size, 1, kv_lora), 7.0, dtype=dtype),  # kv_cache
        torch.full((blocks, page_size, 1, rope), 7.0, dtype=dtype),  # kv_cache_rope
        torch.randperm(blocks * page_size)[:tokens].to(torch.int32),  # slotmapping
        torch.tensor([scale0], dtype=dtype),  # quant_scale0
        torch.tensor([offset0], dtype=torch.int8),  # quant_offset0
        bias0,
        torch.tensor([scale1], dtype=dtype),  # quant_scale1
        torch.tensor([offset1], dtype=torch.int8),  # quant_offset1
        bias1,
    )
