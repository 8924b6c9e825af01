"""Benchmark sgl-npu-attention's kernels against torch baselines, eager and under torch.compile.

    python bench_attention.py --out docs/benchmarks [--quick] [--device cuda]

decode: paged decode, ``batch x q_heads/kv_heads x seq_len``; extend: causal prefill, ``tokens x q_heads/kv_heads``;
D = 128 and pages of 128 tokens. The baselines gather the pages through the block table and run
``scaled_dot_product_attention``. MB counts the KV bytes read
(plus q and out); % copy compares that rate with ``dst.copy_(src)`` moving the same bytes in this run.
mla: decode_mla, ``batch x q_heads x seq_len`` with DeepSeek's latent 512 + rope 64 (MB: the latent and rope rows
read, plus q and out).
indexer: lightning_indexer, ``requests x new tokens x seq_len`` with 64 heads of 128, keeping 2048 keys (MB: the keys,
q, weights and the indices).
bmm: batch_matmul_transpose, ``tokens x heads x K x N``, against ``torch.bmm`` on the transposed views.
prolog: mla_preprocess (per-token int8), ``tokens x heads x hidden`` with DeepSeek's q_lora 1536, latent 512, rope 64,
nope 128 (MB: both int8 weights, wuk, hiddenState, the outputs and the cache rows written).
Compute-bound ops (extend, mla, indexer, bmm) also report GFLOP/s and its share of torch's GEMM rate (fp32 2048^3 on
the CPU, bf16 8192^3 on a GPU), timed in turn with the kernel.
"""

from __future__ import annotations

from pathlib import Path

import sgl_npu_attention as ops
import torch
import torch.nn.functional as F
from sgl_npu_attention import reference
from sgl_npu_attention.testing import paged_cache, prolog_inputs
from sgl_npu_core.bench import SUITE_NOTES, Case, Report, run_suite

REPO = Path(__file__).resolve().parents[3]
PAGE, HEAD_DIM = 128, 128
NOTES = [
    *SUITE_NOTES,
    "decode baseline: pages gathered through the block table, then `scaled_dot_product_attention(enable_gqa=True)`"
    " (all sequences of one length, so the batch needs no mask).",
    "mla baseline: pages gathered, upcast to fp32 (torch's bf16 GEMM is ~100x slower here), then"
    " `scaled_dot_product_attention` with the heads as query rows of one shared latent KV head.",
    "indexer baseline: pages gathered, fp32 `einsum` of every head's scores, relu, weighted head sum, causal mask,"
    " `topk` (which does not order ties).",
    "bmm baseline: `torch.bmm(a.transpose(0, 1), b).transpose(0, 1)`.",
    "prolog baseline: `reference.mla_preprocess`, the torch composition of the same stages (fp64 int8 GEMMs,"
    " fp32 RMSNorm / quantize / RoPE, an indexed cache write).",
]


def torch_decode(q, k_cache, v_cache, block_table, seq_lens):
    """What a torch user writes for paged decode of equal-length sequences."""
    length = int(seq_lens[0])
    pages = block_table[:, : (length + PAGE - 1) // PAGE].long()
    k = k_cache[pages].flatten(1, 2)[:, :length].transpose(1, 2)  # [B, Hkv, L, D]
    v = v_cache[pages].flatten(1, 2)[:, :length].transpose(1, 2)
    return F.scaled_dot_product_attention(q.unsqueeze(2), k, v, enable_gqa=True).squeeze(2)


def decode(batch, heads, seq_len, dtype) -> Case:
    q_heads, kv_heads = (int(h) for h in heads.split("/"))
    k_cache, v_cache, table, lens = paged_cache([seq_len] * batch, PAGE, kv_heads, HEAD_DIM, HEAD_DIM, dtype)
    q = torch.randn(batch, q_heads, HEAD_DIM).to(dtype)
    out = torch.empty(batch, q_heads, HEAD_DIM, dtype=dtype)
    args = (q, k_cache, v_cache, table, lens)
    kv_bytes = 2 * batch * seq_len * kv_heads * HEAD_DIM * q.element_size()
    return Case(
        lambda: ops.decode_attention(*args, out=out),
        lambda: ops.decode_attention(*args),
        torch_decode,
        args,
        kv_bytes + q.nbytes + out.nbytes,
    )


def torch_prefill(q, k_cache, v_cache, block_table, cu_seqlens_q, seq_lens):
    """One request's prefill as a torch user writes it: pages gathered, then causal SDPA."""
    length = int(seq_lens[0])
    pages = block_table[0, : (length + PAGE - 1) // PAGE].long()
    k = k_cache[pages].flatten(0, 1)[:length].transpose(0, 1)  # [Hkv, L, D]
    v = v_cache[pages].flatten(0, 1)[:length].transpose(0, 1)
    return F.scaled_dot_product_attention(q.transpose(0, 1), k, v, is_causal=True, enable_gqa=True).transpose(0, 1)


def extend(tokens, heads, dtype) -> Case:
    """Causal prefill of one request of ``tokens`` tokens (its KV already in the cache)."""
    q_heads, kv_heads = (int(h) for h in heads.split("/"))
    k_cache, v_cache, table, lens = paged_cache([tokens], PAGE, kv_heads, HEAD_DIM, HEAD_DIM, dtype)
    q = torch.randn(tokens, q_heads, HEAD_DIM).to(dtype)
    cu = torch.tensor([0, tokens], dtype=torch.int32)
    out = torch.empty(tokens, q_heads, HEAD_DIM, dtype=dtype)
    args = (q, k_cache, v_cache, table, cu, lens)
    kv_bytes = 2 * tokens * kv_heads * HEAD_DIM * q.element_size()
    # Q K^T and P V over the causal half, counted once: 2 GEMMs x 2 FLOPs x T^2 / 2 x Hq x D.
    flops = 2 * tokens * tokens * q_heads * HEAD_DIM
    return Case(
        lambda: ops.extend_attention(*args, out=out),
        lambda: ops.extend_attention(*args),
        torch_prefill,
        args,
        kv_bytes + q.nbytes + out.nbytes,
        flops,
    )


LATENT, ROPE = 512, 64


def torch_mla(q, nope, rope, block_table, seq_lens):
    """Absorbed MLA decode of equal-length sequences as a torch user writes it."""
    length = int(seq_lens[0])
    pages = block_table[:, : (length + PAGE - 1) // PAGE].long()
    latent = nope[pages].flatten(1, 2)[:, :length].float()  # [B, L, 1, Dl]
    keys = torch.cat([latent, rope[pages].flatten(1, 2)[:, :length].float()], dim=-1).transpose(1, 2)
    out = F.scaled_dot_product_attention(q.float().unsqueeze(1), keys, latent.transpose(1, 2), scale=0.07)
    return out.squeeze(1).to(q.dtype)


def mla(batch, q_heads, seq_len, dtype) -> Case:
    nope, rope, table, lens = paged_cache([seq_len] * batch, PAGE, 1, LATENT, ROPE, dtype)
    q = torch.randn(batch, q_heads, LATENT + ROPE).to(dtype)
    out = torch.empty(batch, q_heads, LATENT, dtype=dtype)
    args = (q, nope, rope, table, lens)
    flops = 2 * batch * seq_len * q_heads * (2 * LATENT + ROPE)
    return Case(
        lambda: ops.decode_mla(*args, 0.07, out=out),
        lambda: ops.decode_mla(*args, 0.07),
        torch_mla,
        args,
        batch * seq_len * (LATENT + ROPE) * q.element_size() + q.nbytes + out.nbytes,
        flops,
    )


INDEX_HEADS, INDEX_DIM, SPARSE = 64, 128, 2048


def torch_indexer(q, k_cache, weights, block_table, cu_seqlens_q, seq_lens):
    """The indexer for requests of one length and one query count, as a torch user writes it."""
    batch, length = block_table.shape[0], int(seq_lens[0])
    q_len = q.shape[0] // batch
    pages = block_table[:, : (length + PAGE - 1) // PAGE].long()
    keys = k_cache[pages].flatten(1, 2)[:, :length, 0].float()  # [B, L, D]
    dots = torch.einsum("bthd,bld->bthl", q.float().view(batch, q_len, *q.shape[1:]), keys).relu()
    scores = (dots * weights.float().view(batch, q_len, -1, 1)).sum(2)
    limit = length - q_len + torch.arange(q_len) + 1
    scores = scores.masked_fill(torch.arange(length) >= limit[:, None], float("-inf"))
    return scores.topk(min(SPARSE, length), dim=-1).indices.view(q.shape[0], -1)


def indexer(requests, q_len, seq_len, dtype) -> Case:
    k_cache, _, table, lens = paged_cache([seq_len] * requests, PAGE, 1, INDEX_DIM, 1, dtype)
    tokens = requests * q_len
    q = torch.randn(tokens, INDEX_HEADS, INDEX_DIM).to(dtype)
    weights = torch.randn(tokens, INDEX_HEADS)
    cu = torch.arange(requests + 1, dtype=torch.int32) * q_len
    out = torch.empty(tokens, SPARSE, dtype=torch.int32)
    args = (q, k_cache, weights, table, cu, lens)
    visible = requests * sum(seq_len - q_len + i + 1 for i in range(q_len))
    flops = 2 * visible * INDEX_HEADS * INDEX_DIM
    return Case(
        lambda: ops.lightning_indexer(*args, SPARSE, out=out),
        lambda: ops.lightning_indexer(*args, SPARSE),
        torch_indexer,
        args,
        requests * seq_len * INDEX_DIM * q.element_size() + q.nbytes + weights.nbytes + out.nbytes,
        flops,
    )


def torch_bmm(a, b):
    return torch.bmm(a.transpose(0, 1), b).transpose(0, 1)


def bmm(tokens, heads, k, n, dtype) -> Case:
    a, b = torch.randn(tokens, heads, k).to(dtype), torch.randn(heads, k, n).to(dtype)
    out = torch.empty(tokens, heads, n, dtype=dtype)
    flops = 2 * tokens * heads * k * n
    return Case(
        lambda: ops.batch_matmul_transpose(a, b, out=out),
        lambda: ops.batch_matmul_transpose(a, b),
        torch_bmm,
        (a, b),
        a.nbytes + b.nbytes + out.nbytes,
        flops,
    )


def prolog(tokens, heads, hidden, dtype) -> Case:
    q_lora, kv_lora, rope, nope = 1536, 512, 64, 128
    args = prolog_inputs(tokens, hidden, q_lora, kv_lora, rope, nope, heads, PAGE, (tokens + PAGE - 1) // PAGE + 1,
                         dtype, "per_token_quant_symm")  # fmt: skip
    q_out0 = torch.empty(tokens, heads, kv_lora, dtype=dtype)
    q_out1 = torch.empty(tokens, heads, rope, dtype=dtype)
    weights = args[3].nbytes + args[7].nbytes + args[12].nbytes
    return Case(
        lambda: ops.mla_preprocess(*args, q_out0=q_out0, q_out1=q_out1),
        lambda: ops.mla_preprocess(*args),
        reference.mla_preprocess,
        args,
        weights + args[0].nbytes + q_out0.nbytes + q_out1.nbytes + tokens * (kv_lora + rope) * args[0].element_size(),
    )


OPS = {"decode": decode, "extend": extend, "mla": mla, "indexer": indexer, "bmm": bmm, "prolog": prolog}


def main(argv: list[str] | None = None) -> Report:
    shapes = {
        "decode": [(16, "32/8", 4096), (1, "32/8", 4096), (16, "16/1", 4096), (64, "32/8", 1024)],
        "extend": [(2048, "32/8")],
        "mla": [(16, 16, 4096), (16, 128, 4096), (1, 128, 4096)],
        "indexer": [(16, 1, 8192), (1, 256, 2048)],
        "bmm": [(16, 128, 128, 512), (16, 128, 512, 128), (1024, 16, 512, 128)],
        "prolog": [(16, 16, 7168), (128, 16, 7168)],
    }
    quick = {
        "decode": (2, "8/2", 512),
        "extend": (64, "8/2"),
        "mla": (2, 16, 512),
        "indexer": (2, 1, 2500),
        "bmm": (4, 16, 128, 64),
        "prolog": (4, 4, 2048),
    }
    return run_suite(
        "attention", OPS, shapes, (torch.bfloat16,), notes=list(NOTES), doc=__doc__, quick_shape=quick,
        default_out=REPO / "docs" / "benchmarks", argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    main()
