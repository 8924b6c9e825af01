"""Benchmark the split-QKV + QK-norm + RoPE ops against their PyTorch references, eager and under torch.compile.

    python bench_rope.py --out docs/benchmarks [--quick] [--ops split_qkv_rmsnorm_rope] [--device cuda]

Shapes are ``tokens x model``: Qwen3-8B (q 4096, kv 1024, head 128, full NeoX RoPE) and Qwen3-Next (q 4096 stored
with its gate, kv 512, head 256, RoPE on a quarter of each head). Writes rope.md / rope.json / rope.png.
"""

from __future__ import annotations

from pathlib import Path

import sgl_npu_norm as ops
import torch
from sgl_npu_core.bench import SUITE_NOTES, Case, Report, run_suite
from sgl_npu_norm import reference as ref

REPO = Path(__file__).resolve().parents[3]
# model -> (q hidden, kv hidden, head dim, rope dim)
MODELS = {"qwen3-8b": (4096, 1024, 128, 128), "qwen3-next": (4096, 512, 256, 64)}
TOKENS = (1, 128, 4096)
NOTES = [
    *SUITE_NOTES,
    "MB counts qkv read once, every output written once and the cos/sin rows read (a gathered row once per token).",
    "apply_rope_with_cos_sin_cache_inplace is in place, so it has no fresh time; its reference is functional.",
]


def _nbytes(*tensors) -> int:
    return sum(t.nbytes for t in tensors)


def _tables(tokens, rope_dim, dtype):
    angles = torch.rand(tokens, rope_dim // 2) * 6
    return torch.cat([angles.sin()] * 2, -1).to(dtype), torch.cat([angles.cos()] * 2, -1).to(dtype)


def _qkv_case(tokens, model, dtype, gate=False):
    """(qkv, q weight, k weight, preallocated outputs) of a model's fused row; q heads hold a gate with ``gate``."""
    q, kv, head, _ = MODELS[model]
    qkv = torch.randn(tokens, (2 if gate else 1) * q + 2 * kv, dtype=dtype)
    weights = torch.randn(head, dtype=dtype), torch.randn(head, dtype=dtype)
    out = tuple(torch.empty(tokens, w, dtype=dtype) for w in (q, kv, kv, *([q] if gate else [])))
    return qkv, weights, out


def split_qkv_rmsnorm_rope(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype)
    sin, cos = _tables(tokens, rope, dtype)
    args = (qkv, sin, cos, q, kv, head, 1e-6, qw, kw)
    return Case(
        lambda: ops.split_qkv_rmsnorm_rope(*args, out=out),
        lambda: ops.split_qkv_rmsnorm_rope(*args),
        ref.split_qkv_rmsnorm_rope,
        args,
        _nbytes(qkv, sin, cos, *out),
    )


def split_qkv_rmsnorm_rope_pos_cache(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype)
    cache = torch.randn(32768, rope)  # fp32, as SGLang keeps it
    positions = torch.randint(0, 32768, (tokens,))
    args = (qkv, positions, cache, q, kv, head, 1e-6, qw, kw)
    return Case(
        lambda: ops.split_qkv_rmsnorm_rope_pos_cache(*args, out=out),
        lambda: ops.split_qkv_rmsnorm_rope_pos_cache(*args),
        ref.split_qkv_rmsnorm_rope_pos_cache,
        args,
        _nbytes(qkv, positions, *out) + tokens * cache.shape[1] * cache.element_size(),
    )


def split_qkvgate_gemma_rmsnorm_rope(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype, gate=True)
    sin, cos = _tables(tokens, rope, dtype)
    args = (qkv, sin, cos, q, kv, head, rope, 1e-6, qw, kw)
    return Case(
        lambda: ops.split_qkvgate_gemma_rmsnorm_rope(*args, out=out),
        lambda: ops.split_qkvgate_gemma_rmsnorm_rope(*args),
        ref.split_qkvgate_gemma_rmsnorm_rope,
        args,
        _nbytes(qkv, sin, cos, *out),
    )


def apply_rope_with_cos_sin_cache_inplace(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    query, key = torch.randn(tokens, q, dtype=dtype), torch.randn(tokens, kv, dtype=dtype)
    cache = torch.randn(32768, rope)
    positions = torch.randint(0, 32768, (tokens,))
    args = (positions, query, key, head, cache)
    return Case(
        lambda: ops.apply_rope_with_cos_sin_cache_inplace(*args),
        None,
        ref.apply_rope_with_cos_sin_cache,
        args,
        2 * _nbytes(query, key) + _nbytes(positions) + tokens * cache.shape[1] * cache.element_size(),
    )


OPS = {
    "split_qkv_rmsnorm_rope": split_qkv_rmsnorm_rope,
    "split_qkv_rmsnorm_rope_pos_cache": split_qkv_rmsnorm_rope_pos_cache,
    "split_qkvgate_gemma_rmsnorm_rope": split_qkvgate_gemma_rmsnorm_rope,
    "apply_rope_with_cos_sin_cache_inplace": apply_rope_with_cos_sin_cache_inplace,
}


def main(argv: list[str] | None = None) -> Report:
    shapes = [(t, m) for m in MODELS for t in TOKENS]
    out = REPO / "docs" / "benchmarks"
    return run_suite(
        "rope", OPS, shapes, (torch.bfloat16,), notes=NOTES, doc=__doc__, quick_shape=(128, "qwen3-8b"),
        default_out=out, argv=argv,
    )  # fmt: skip


if __name__ == "__main__":
    main()
