"""Shape/dtype/device checks of every op (shared by the fake impls and the Triton impls) and the fakes."""

from __future__ import annotations

import math

import torch
from sgl_npu_core.checks import (
    check,
    check_apart,
    check_contiguous,
    check_disjoint,
    check_dtype,
    check_float,
    check_last_dim_contiguous,
    check_same_device,
    check_written_apart,
    fail,
)
from sgl_npu_core.library import OpLibrary

LIB = OpLibrary("sgl_npu_attention")


def check_table(block_table, seq_lens, q) -> None:
    """block_table int32 [requests, max_pages] and seq_lens int32 [requests] on q's device."""
    check_dtype(block_table, torch.int32, "block_table")
    check(block_table.dim() == 2, "block_table must be [requests, max_pages]")
    check_last_dim_contiguous(block_table, "block_table")
    check_dtype(seq_lens, torch.int32, "seq_lens")
    check_contiguous(seq_lens, "seq_lens")
    check(tuple(seq_lens.shape) == (block_table.shape[0],), f"seq_lens must have shape [{block_table.shape[0]}]")
    check_same_device(block_table, q, "block_table", "q")
    check_same_device(seq_lens, q, "seq_lens", "q")


def check_cache(cache, name, q) -> None:
    check(cache.dim() == 4, f"{name} must be [num_blocks, page_size, kv_heads, head_dim], got {cache.dim()} dims")
    check(min(cache.shape[1:]) > 0, f"{name} must have non-empty pages, heads and dims")
    check_last_dim_contiguous(cache, name)
    check_dtype(cache, q.dtype, name)
    check_same_device(cache, q, name, "q")


def check_paged(q, k_cache, v_cache, block_table, seq_lens, sinks, out) -> None:
    """Shapes, dtypes and devices of a paged-attention op (the data checks need the values: see the ops)."""
    check(q.dim() == 3, f"q must be [tokens, q_heads, head_dim], got {q.dim()} dims")
    check_float(q, "q")
    check_last_dim_contiguous(q, "q")
    check_cache(k_cache, "k_cache", q)
    check_cache(v_cache, "v_cache", q)
    tokens, q_heads, d = q.shape
    check(k_cache.shape[3] == d, f"k_cache must have q's head_dim {d}, got {k_cache.shape[3]}")
    check(v_cache.shape[:3] == k_cache.shape[:3], "v_cache must have k_cache's blocks, page size and kv heads")
    kv_heads = k_cache.shape[2]
    check(q_heads > 0 and q_heads % kv_heads == 0, f"q heads ({q_heads}) must be a multiple of kv heads ({kv_heads})")
    check(tuple(out.shape) == (tokens, q_heads, v_cache.shape[3]), f"out must have shape [{tokens}, {q_heads}, "
          f"{v_cache.shape[3]}]")  # fmt: skip
    check_dtype(out, q.dtype, "out")
    check_last_dim_contiguous(out, "out")
    check_disjoint(out, "out")
    check_same_device(out, q, "out", "q")
    check_table(block_table, seq_lens, q)
    if sinks is not None:
        check_dtype(sinks, torch.float32, "sinks")
        check(tuple(sinks.shape) == (q_heads,), f"sinks must have shape [{q_heads}]")
        check_contiguous(sinks, "sinks")
        check_same_device(sinks, q, "sinks", "q")
        check_apart(out, sinks, "out", "sinks")


FLOAT32_MAX = torch.finfo(torch.float32).max


def check_sm_scale(sm_scale) -> None:
    if not (math.isfinite(sm_scale) and abs(sm_scale) <= FLOAT32_MAX):
        fail(f"sm_scale must be finite (in float32), got {sm_scale}")


def check_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out) -> None:
    check_sm_scale(sm_scale)
    check_paged(q, k_cache, v_cache, block_table, seq_lens, sinks, out)
    check(block_table.shape[0] == q.shape[0], f"block_table must have a row per query token ({q.shape[0]})")


def check_cu_seqlens(cu_seqlens_q, block_table, q) -> None:
    """int32 [requests + 1] on q's device (its values: see the ops); tokens need a request."""
    check_dtype(cu_seqlens_q, torch.int32, "cu_seqlens_q")
    check_contiguous(cu_seqlens_q, "cu_seqlens_q")
    check(tuple(cu_seqlens_q.shape) == (block_table.shape[0] + 1,), f"cu_seqlens_q must have shape "
          f"[{block_table.shape[0] + 1}]")  # fmt: skip
    check(block_table.shape[0] > 0 or q.shape[0] == 0, "tokens need at least one request (block_table row)")
    check_same_device(cu_seqlens_q, q, "cu_seqlens_q", "q")


def check_extend(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks, sliding_window,
                 out) -> None:  # fmt: skip
    check_sm_scale(sm_scale)
    check_paged(q, k_cache, v_cache, block_table, seq_lens, sinks, out)
    check_cu_seqlens(cu_seqlens_q, block_table, q)


def check_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out) -> None:
    check_sm_scale(sm_scale)
    check(q.dim() == 3, f"q must be [batch, q_heads, latent_dim + rope_dim], got {q.dim()} dims")
    check_float(q, "q")
    check_last_dim_contiguous(q, "q")
    check_cache(kv_nope_cache, "kv_nope_cache", q)
    check_cache(kv_rope_cache, "kv_rope_cache", q)
    check(kv_nope_cache.shape[2] == 1, f"kv_nope_cache must have one (latent) kv head, got {kv_nope_cache.shape[2]}")
    check(tuple(kv_rope_cache.shape[:3]) == (*kv_nope_cache.shape[:2], 1), "kv_rope_cache must have kv_nope_cache's "
          "blocks, page size and one kv head")  # fmt: skip
    batch, q_heads, _ = q.shape
    dl, dr = kv_nope_cache.shape[3], kv_rope_cache.shape[3]
    check(q.shape[2] == dl + dr, f"q's last dim must be the latent dim {dl} + the rope dim {dr}, got {q.shape[2]}")
    check(q_heads > 0, "q must have at least one head")
    check(tuple(out.shape) == (batch, q_heads, dl), f"out must have shape [{batch}, {q_heads}, {dl}]")
    check_dtype(out, q.dtype, "out")
    check_last_dim_contiguous(out, "out")
    check_disjoint(out, "out")
    check_same_device(out, q, "out", "q")
    check_table(block_table, seq_lens, q)
    check(block_table.shape[0] == batch, f"block_table must have a row per query token ({batch})")


def check_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count, out) -> None:
    check(q.dim() == 3, f"q must be [tokens, heads, head_dim], got {q.dim()} dims")
    check_float(q, "q")
    check_last_dim_contiguous(q, "q")
    check_cache(k_cache, "k_cache", q)
    tokens, heads, d = q.shape
    check(k_cache.shape[2] == 1, f"k_cache must have one kv head, got {k_cache.shape[2]}")
    check(k_cache.shape[3] == d, f"k_cache must have q's head_dim {d}, got {k_cache.shape[3]}")
    check(heads > 0, "q must have at least one head")
    check(tuple(weights.shape) == (tokens, heads), f"weights must have shape [{tokens}, {heads}]")
    check_float(weights, "weights")
    check(weights.dtype in (torch.float32, q.dtype), f"weights must be float32 or q's dtype ({q.dtype}), got "
          f"{weights.dtype}")  # fmt: skip
    check_last_dim_contiguous(weights, "weights")
    check_same_device(weights, q, "weights", "q")
    check(sparse_count > 0, f"sparse_count must be positive, got {sparse_count}")
    check_dtype(out, torch.int32, "out")
    check(tuple(out.shape) == (tokens, sparse_count), f"out must have shape [{tokens}, {sparse_count}]")
    check_last_dim_contiguous(out, "out")
    check_same_device(out, q, "out", "q")
    check_table(block_table, seq_lens, q)
    check_cu_seqlens(cu_seqlens_q, block_table, q)


def check_bmm(a, b, out) -> None:
    check(a.dim() == 3, f"a must be [M, B, K], got {a.dim()} dims")
    check(b.dim() == 3, f"b must be [B, K, N], got {b.dim()} dims")
    check(out.dim() == 3, f"out must be [M, B, N], got {out.dim()} dims")
    check_float(a, "a")
    m, heads, k = a.shape
    check(tuple(b.shape[:2]) == (heads, k), f"b must be [{heads}, {k}, N] to match a [M, B, K], got {list(b.shape)}")
    check(tuple(out.shape) == (m, heads, b.shape[2]), f"out must have shape [{m}, {heads}, {b.shape[2]}]")
    for name, t in (("a", a), ("b", b), ("out", out)):
        check_dtype(t, a.dtype, name)
        check_last_dim_contiguous(t, name)
        check_same_device(t, a, name, "a")


@LIB.fake("decode_attention")
def _(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out):
    check_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out)


@LIB.fake("extend_attention")
def _(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks, sliding_window, out):
    check_extend(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens, sm_scale, causal, sinks, sliding_window, out)


@LIB.fake("batch_matmul_transpose")
def _(a, b, out):
    check_bmm(a, b, out)


@LIB.fake("decode_mla")
def _(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out):
    check_mla(q, kv_nope_cache, kv_rope_cache, block_table, seq_lens, sm_scale, out)


@LIB.fake("lightning_indexer")
def _(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count, out):
    check_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens, sparse_count, out)


def check_vector(t, size, name, dtype=None, ref=None) -> None:
    check(t.dim() == 1 and t.shape[0] == size, f"{name} must have shape [{size}], got {list(t.shape)}")
    if dtype is not None:
        check_dtype(t, dtype, name)
    if ref is not None:
        check_dtype(t, ref.dtype, name)
        check_same_device(t, ref, name, "hiddenState")


def check_prolog(hiddenState, wdqkv, descale0, gamma1, beta1, wuq, descale1, gamma2, cos, sin, wuk, kv_cache,
                 kv_cache_rope, slotmapping, quant_scale0, quant_offset0, bias0, quant_scale1, quant_offset1, bias1,
                 q_out0, q_out1) -> None:  # fmt: skip
    """Shapes, dtypes and devices of mla_preprocess (the slot range is checked by the cache write)."""
    x = hiddenState
    check(x.dim() == 2, f"hiddenState must be [tokens, hidden], got {x.dim()} dims")
    check_float(x, "hiddenState")
    n, hidden = x.shape
    check(wuk.dim() == 3, f"wuk must be [heads, nope, kv_lora], got {wuk.dim()} dims")
    heads, nope, kv_lora = wuk.shape
    check_dtype(wuk, x.dtype, "wuk")
    check(gamma2.dim() == 1 and gamma2.shape[0] == kv_lora, f"gamma2 must have shape [{kv_lora}] (wuk's kv_lora)")
    check(cos.dim() == 2 and cos.shape[0] == n, f"cos must be [{n}, rope], got {list(cos.shape)}")
    rope = cos.shape[1]
    check(rope % 2 == 0, f"the rope dim (cos) must be even, got {rope}")
    check(wdqkv.dim() == 2 and wdqkv.shape[1] == hidden and wdqkv.shape[0] > kv_lora + rope,
          f"wdqkv must be [kv_lora + rope + q_lora, {hidden}], got {list(wdqkv.shape)}")  # fmt: skip
    check_dtype(wdqkv, torch.int8, "wdqkv")
    mm1, q_lora, mm2 = wdqkv.shape[0], wdqkv.shape[0] - kv_lora - rope, heads * (nope + rope)
    check(tuple(wuq.shape) == (mm2, q_lora), f"wuq must have shape [{mm2}, {q_lora}], got {list(wuq.shape)}")
    check_dtype(wuq, torch.int8, "wuq")
    for t, name in ((wdqkv, "wdqkv"), (wuq, "wuq"), (descale0, "descale0"), (descale1, "descale1")):
        check_contiguous(t, name)
        check_same_device(t, x, name, "hiddenState")
    check_last_dim_contiguous(x, "hiddenState")
    check_last_dim_contiguous(wuk, "wuk")
    for t, name in ((sin, "sin"), (cos, "cos")):
        check(tuple(t.shape) == (n, rope), f"{name} must have shape [{n}, {rope}]")
        check_dtype(t, x.dtype, name)
        check_same_device(t, x, name, "hiddenState")
    check_vector(descale0, mm1, "descale0", torch.float32)
    check_vector(descale1, mm2, "descale1", torch.float32)
    check_vector(bias0, mm1, "bias0", torch.int32)
    check_vector(bias1, mm2, "bias1", torch.int32)
    for t, name in ((quant_scale0, "quant_scale0"), (quant_offset0, "quant_offset0"), (quant_scale1, "quant_scale1"),
                    (quant_offset1, "quant_offset1")):  # fmt: skip
        check(t.numel() == 1, f"{name} must hold one value, got {t.numel()}")
    check_vector(gamma1, q_lora, "gamma1", ref=x)
    check_vector(beta1, q_lora, "beta1", ref=x)
    check_vector(gamma2, kv_lora, "gamma2", ref=x)
    for t, name, d in ((kv_cache, "kv_cache", kv_lora), (kv_cache_rope, "kv_cache_rope", rope)):
        check(t.dim() == 4 and t.shape[2] == 1 and t.shape[3] == d, f"{name} must be [num_blocks, page_size, 1, {d}], "
              f"got {list(t.shape)}")  # fmt: skip
        check_dtype(t, x.dtype, name)
        check_last_dim_contiguous(t, name)
        check_same_device(t, x, name, "hiddenState")
    check(kv_cache_rope.shape[:2] == kv_cache.shape[:2], "kv_cache_rope must have kv_cache's blocks and page size")
    check_vector(slotmapping, n, "slotmapping", torch.int32)
    for t, name, d in ((q_out0, "q_out0", kv_lora), (q_out1, "q_out1", rope)):
        if t is None:  # allocated by the op
            continue
        check(tuple(t.shape) == (n, heads, d), f"{name} must have shape [{n}, {heads}, {d}]")
        check_dtype(t, x.dtype, name)
        check_last_dim_contiguous(t, name)
        check_same_device(t, x, name, "hiddenState")


def check_quant_rows(x, gamma, beta, eps, quant_scale, quant_offset, codes, row_scale) -> None:
    check(x.dim() == 2, f"x must be [rows, cols], got {x.dim()} dims")
    check_float(x, "x")
    check((beta is None or gamma is not None) and (quant_scale is None) == (quant_offset is None),
          "beta needs gamma, and quant_scale and quant_offset go together")  # fmt: skip
    check(tuple(codes.shape) == tuple(x.shape), f"codes must have shape {list(x.shape)}")
    check_dtype(codes, torch.int8, "codes")
    check_vector(row_scale, x.shape[0], "row_scale", torch.float32)
    check_disjoint(codes, "codes")
    params = [("gamma", gamma), ("beta", beta), ("quant_scale", quant_scale), ("quant_offset", quant_offset)]
    check_written_apart([("codes", codes), ("row_scale", row_scale)], [("x", x), *params])


def check_cache_write(latent, k_pe, gamma, cos, sin, slotmapping, eps, kv_cache, kv_cache_rope) -> None:
    n, rope = k_pe.shape
    check(latent.dim() == 2 and latent.shape[0] == n, f"latent must be [{n}, kv_lora]")
    for t, name in ((cos, "cos"), (sin, "sin")):
        check(tuple(t.shape) == (n, rope), f"{name} must have shape [{n}, {rope}]")
    check_vector(gamma, latent.shape[1], "gamma")
    check_vector(slotmapping, n, "slotmapping", torch.int32)
    check(tuple(kv_cache.shape[2:]) == (1, latent.shape[1]), "kv_cache must be [num_blocks, page_size, 1, kv_lora]")
    check(tuple(kv_cache_rope.shape) == (*kv_cache.shape[:2], 1, rope), "kv_cache_rope must be [num_blocks, "
          "page_size, 1, rope] with kv_cache's blocks and page size")  # fmt: skip
    if rope % 2:
        fail(f"k_pe's rope dim must be even, got {rope}")
    for t, name in (
        (k_pe, "k_pe"),
        (cos, "cos"),
        (sin, "sin"),
        (kv_cache, "kv_cache"),
        (kv_cache_rope, "kv_cache_rope"),
    ):
        check_dtype(t, latent.dtype, name)
    for t, name in ((kv_cache, "kv_cache"), (kv_cache_rope, "kv_cache_rope")):
        check_disjoint(t.squeeze(2), name)
    check_apart(kv_cache_rope, kv_cache, "kv_cache_rope", "kv_cache")
    inputs = ((latent, "latent"), (k_pe, "k_pe"), (cos, "cos"), (sin, "sin"), (slotmapping, "slotmapping"),
              (gamma, "gamma"))  # fmt: skip
    for cache, cache_name in ((kv_cache, "kv_cache"), (kv_cache_rope, "kv_cache_rope")):
        for t, name in inputs:  # as the C++ op: the slots are read again per row, after rows are written
            check_apart(cache, t, cache_name, name)


def check_int8_matmul(codes, weight, descale, row_scale, bias, out) -> None:
    check_dtype(codes, torch.int8, "codes")
    check_dtype(weight, torch.int8, "weight")
    check(codes.dim() == 2 and weight.dim() == 2 and weight.shape[1] == codes.shape[1], "weight must be [N, K] and "
          "codes [tokens, K]")  # fmt: skip
    m, n = codes.shape[0], weight.shape[0]
    check_vector(descale, n, "descale", torch.float32)
    check_vector(row_scale, m, "row_scale", torch.float32)
    if bias is not None:
        check_vector(bias, n, "bias", torch.int32)
    check_float(out, "out")
    check(tuple(out.shape) == (m, n), f"out must have shape [{m}, {n}]")
    check_disjoint(out, "out")
    inputs = [("codes", codes), ("weight", weight), ("descale", descale), ("row_scale", row_scale), ("bias", bias)]
    check_written_apart([("out", out)], inputs)


@LIB.fake("mla_int8_matmul")
def _(codes, weight, descale, row_scale, bias, out):
    check_int8_matmul(codes, weight, descale, row_scale, bias, out)


@LIB.fake("mla_quant_rows")
def _(x, gamma, beta, eps, quant_scale, quant_offset, codes, row_scale):
    check_quant_rows(x, gamma, beta, eps, quant_scale, quant_offset, codes, row_scale)


@LIB.fake("mla_cache_write")
def _(latent, k_pe, gamma, cos, sin, slotmapping, eps, kv_cache, kv_cache_rope):
    check_cache_write(latent, k_pe, gamma, cos, sin, slotmapping, eps, kv_cache, kv_cache_rope)
