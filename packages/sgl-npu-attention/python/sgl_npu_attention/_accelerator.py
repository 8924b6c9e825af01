"""cuda / npu implementations of the ops: the Triton kernels, or the references where Triton is missing."""

from __future__ import annotations

import torch

from . import _meta, reference
from ._meta import LIB


def _triton():
    from . import triton as kernels

    return kernels


def check_pages(block_table, seq_lens, k_cache) -> None:
    """The data checks of the C++ op: lengths within the block table, used pages within the cache (they read the
    values, so on a device they cost a host sync; the Triton path skips them)."""
    blocks, page = k_cache.shape[0], k_cache.shape[1]
    lens = seq_lens.long()
    _meta.check(bool(((lens >= 0) & (lens <= block_table.shape[1] * page)).all()),
                f"seq_lens must be in [0, {block_table.shape[1]} pages x {page}]")  # fmt: skip
    used = torch.arange(block_table.shape[1], device=block_table.device) < ((lens + page - 1) // page)[:, None]
    ids = block_table[used]
    _meta.check(bool(((ids >= 0) & (ids < blocks)).all()), f"block_table holds a block outside the cache ({blocks})")


def check_cu_seqlens(cu_seqlens_q, seq_lens, tokens) -> None:
    """The data checks of cu_seqlens_q: from 0 to the query tokens, each request's part of its seq_lens."""
    q_lens = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
    _meta.check(int(cu_seqlens_q[0]) == 0 and int(cu_seqlens_q[-1]) == tokens, "cu_seqlens_q must run from 0 "
                f"to the {tokens} query tokens")  # fmt: skip
    _meta.check(bool(((q_lens >= 0) & (q_lens <= seq_lens.long())).all()), "each request's query tokens "
                "(cu_seqlens_q) must be part of its seq_lens")  # fmt: skip


def _ref_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out):
    _meta.check_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out)
    check_pages(block_table, seq_lens, k_cache)
    out.copy_(reference.decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window))


def _ref_extend(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks, sliding_window,
                out):  # fmt: skip
    _meta.check_extend(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks,
                       sliding_window, out)  # fmt: skip
    check_pages(block_table, seq_lens, k_cache)
    check_cu_seqlens(cu_seqlens_q, seq_lens, q.shape[0])
    out.copy_(reference.extend_attention(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal,
                                         sinks, sliding_window))  # fmt: skip


def _ref_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out):
    _meta.check_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out)
    check_pages(block_table, seq_lens, kv_nope_cache)
    out.copy_(reference.decode_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale))


def _indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count, out):
    # The selection is a sort: the reference runs as composed device ops (no Triton kernel).
    _meta.check_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count, out)
    check_pages(block_table, seq_lens, k_cache)
    check_cu_seqlens(cu_seqlens_q, seq_lens, q.shape[0])
    out.copy_(reference.lightning_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count))


def _bmm(a, b, out):
    # The vendor bmm (cuBLAS / the NPU's cube unit) accumulates in fp32 already: no Triton kernel needed.
    _meta.check_bmm(a, b, out)
    out.copy_(torch.bmm(a.transpose(0, 1), b).transpose(0, 1))


def _quant_rows(x, gamma, beta, eps, quant_scale, quant_offset, codes, row_scale):
    _meta.check_quant_rows(x, gamma, beta, eps, quant_scale, quant_offset, codes, row_scale)
    y = x if gamma is None else reference.rms_norm(x, gamma, beta, eps)
    mode = "per_token_quant_symm" if quant_scale is None else "per_tensor_quant_asymm"
    c, s = reference.quantize_int8(y, mode, quant_scale, quant_offset)
    codes.copy_(c)
    row_scale.copy_(s)


def _int8_matmul(codes, weight, descale, row_scale, bias, out):
    _meta.check_int8_matmul(codes, weight, descale, row_scale, bias, out)
    out.copy_(reference.int8_matmul(codes, weight, descale, row_scale, bias, out.dtype))


def _cache_write(latent, k_pe, gamma, cos, sin, slotmapping, eps, kv_cache, kv_cache_rope):
    _meta.check_cache_write(latent, k_pe, gamma, cos, sin, slotmapping, eps, kv_cache, kv_cache_rope)
    slots, total = slotmapping.long(), kv_cache.shape[0] * kv_cache.shape[1]
    _meta.check(bool(((slots >= 0) & (slots < total)).all()), f"slotmapping holds a slot outside the cache ({total})")
    block, row = slots // kv_cache.shape[1], slots % kv_cache.shape[1]
    kv_cache[block, row, 0] = reference.rms_norm(latent, gamma, eps=eps)
    kv_cache_rope[block, row, 0] = reference.rope_half(k_pe, cos, sin)


LIB.accelerator_impl("decode_attention", lambda *a: _triton().decode_attention(*a), _ref_decode)
LIB.accelerator_impl("extend_attention", lambda *a: _triton().extend_attention(*a), _ref_extend)
LIB.accelerator_impl("decode_mla", lambda *a: _triton().decode_mla(*a), _ref_mla)
LIB.accelerator_impl("lightning_indexer", _indexer, _indexer)
LIB.accelerator_impl("batch_matmul_transpose", _bmm, _bmm)
# mla_preprocess stages: composed device ops (no Triton kernel; the vendor GEMMs do the int8 products).
LIB.accelerator_impl("mla_quant_rows", _quant_rows, _quant_rows)
LIB.accelerator_impl("mla_int8_matmul", _int8_matmul, _int8_matmul)
LIB.accelerator_impl("mla_cache_write", _cache_write, _cache_write)
