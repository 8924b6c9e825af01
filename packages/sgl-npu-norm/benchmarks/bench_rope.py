"""Benchmark the split-QKV + QK-norm + RoPE ops against their PyTorch references, eager and under torch.compile.

    python bench_rope.py --out docs/benchmarks [--quick] [--ops split_qkv_rmsnorm_rope] [--device cuda]

Shapes are ``tokens x model``: Qwen3-8B (q 4096, kv 1024, head 128, full NeoX RoPE) and Qwen3-Next (q 4096 stored
with its gate, kv 512, head 256, RoPE on a quarter of each head). Writes rope.md / rope.json / rope.png.
"""

from __future__ import annotations

import functools
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


def _angles(*rows, rope_dim):
    return torch.rand(*rows, rope_dim // 2) * 6


def _tables(tokens, rope_dim, dtype):
    angles = _angles(tokens, rope_dim=rope_dim)
    return torch.cat([angles.sin()] * 2, -1).to(dtype), torch.cat([angles.cos()] * 2, -1).to(dtype)


def _cos_sin(*rows, rope_dim, dtype=torch.float32):
    """Rows of ``[cos half | sin half]`` of real angles. Random normal values in their place would scale q and k on
    every call of the in-place op, which after a few dozen calls runs on infs, NaNs and denormals (2x slower)."""
    angles = _angles(*rows, rope_dim=rope_dim)
    return torch.cat([angles.cos(), angles.sin()], -1).to(dtype)


def _qkv_case(tokens, model, dtype, gate=False, whole_width=False):
    """(qkv, q weight, k weight, preallocated outputs) of a model's fused row; q heads hold a gate with ``gate``;
    the weights span all the heads with ``whole_width`` (else one head)."""
    q, kv, head, _ = MODELS[model]
    qkv = torch.randn(tokens, (2 if gate else 1) * q + 2 * kv, dtype=dtype)
    weights = tuple(torch.randn(w if whole_width else head, dtype=dtype) for w in (q, kv))
    out = tuple(torch.empty(tokens, w, dtype=dtype) for w in (q, kv, kv, *([q] if gate else [])))
    return qkv, weights, out


def _case(name, args, out, nbytes, **kwargs) -> Case:
    """Op ``name`` of sgl_npu_norm and its reference (same name) on ``args`` and ``kwargs``; ``out`` preallocated."""
    op, reference = getattr(ops, name), getattr(ref, name)
    return Case(
        lambda: op(*args, **kwargs, out=out),
        lambda: op(*args, **kwargs),
        functools.partial(reference, **kwargs),
        args,
        nbytes,
    )


def split_qkv_rmsnorm_rope(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype)
    sin, cos = _tables(tokens, rope, dtype)
    args = (qkv, sin, cos, q, kv, head, 1e-6, qw, kw)
    return _case("split_qkv_rmsnorm_rope", args, out, _nbytes(qkv, sin, cos, *out))


def split_qkv_rmsnorm_rope_pos_cache(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype)
    cache = _cos_sin(32768, rope_dim=rope)  # fp32, as SGLang keeps it
    positions = torch.randint(0, 32768, (tokens,))
    args = (qkv, positions, cache, q, kv, head, 1e-6, qw, kw)
    return _case(
        "split_qkv_rmsnorm_rope_pos_cache",
        args,
        out,
        _nbytes(qkv, positions, *out) + tokens * cache.shape[1] * cache.element_size(),
    )


def split_qkvgate_gemma_rmsnorm_rope(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype, gate=True)
    sin, cos = _tables(tokens, rope, dtype)
    args = (qkv, sin, cos, q, kv, head, rope, 1e-6, qw, kw)
    return _case("split_qkvgate_gemma_rmsnorm_rope", args, out, _nbytes(qkv, sin, cos, *out))


def apply_rope_with_cos_sin_cache_inplace(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    query, key = torch.randn(tokens, q, dtype=dtype), torch.randn(tokens, kv, dtype=dtype)
    cache = _cos_sin(32768, rope_dim=rope)
    positions = torch.randint(0, 32768, (tokens,))
    args = (positions, query, key, head, cache)
    return Case(
        lambda: ops.apply_rope_with_cos_sin_cache_inplace(*args),
        None,
        ref.apply_rope_with_cos_sin_cache,
        args,
        2 * _nbytes(query, key) + _nbytes(positions) + tokens * cache.shape[1] * cache.element_size(),
    )


# mrope sections (sum rope_dim / 2, interleaved): Qwen3-VL's for the Qwen3-8B shapes; a 64-dim split of the Qwen3-Next
# shapes (q stored with its gate), as the gated multimodal models use.
MROPE_SECTIONS = {"qwen3-8b": [24, 20, 20], "qwen3-next": [11, 11, 10]}


def split_qkv_rmsnorm_mrope(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    gate = model == "qwen3-next"
    qkv, (qw, kw), out = _qkv_case(tokens, model, dtype, gate=gate)
    cos_sin = _cos_sin(3, tokens, rope_dim=rope)  # fp32 rows of the T, H and W positions, gathered from SGLang's cache
    args = (qkv, qw, kw, cos_sin, q // head, kv // head, head, 1e-6, MROPE_SECTIONS[model], True)
    nbytes = _nbytes(qkv, *out) + cos_sin[0].nbytes  # each frequency's cos and sin come from one of the three rows
    return _case("split_qkv_rmsnorm_mrope", args, out, nbytes, has_gate=gate)


def fused_rope_qk_mqa(tokens, model, dtype) -> Case:
    q, kv, head, rope = MODELS[model]
    query, key = torch.randn(tokens, q // head, head, dtype=dtype), torch.randn(tokens, kv // head, head, dtype=dtype)
    cos_sin = _cos_sin(tokens, rope_dim=rope, dtype=dtype)
    out = torch.empty_like(query), torch.empty_like(key)
    args = (query, key, cos_sin, rope)
    return _case("fused_rope_qk_mqa", args, out, _nbytes(query, key, cos_sin, *out))


def split_qkv_tp_rmsnorm_rope(tokens, model, dtype) -> Case:
    """One rank (no process group): the norm spans the whole q (and k) width."""
    q, kv, head, rope = MODELS[model]
    qkv, weights, out = _qkv_case(tokens, model, dtype, whole_width=True)
    sin, cos = _tables(tokens, rope, dtype)
    args = (qkv, cos, sin, q, kv, head, 1e-6, *weights, rope)
    return _case("split_qkv_tp_rmsnorm_rope", args, out, _nbytes(qkv, sin, cos, *out))


OPS = {
    "split_qkv_rmsnorm_rope": split_qkv_rmsnorm_rope,
    "split_qkv_rmsnorm_rope_pos_cache": split_qkv_rmsnorm_rope_pos_cache,
    "split_qkvgate_gemma_rmsnorm_rope": split_qkvgate_gemma_rmsnorm_rope,
    "apply_rope_with_cos_sin_cache_inplace": apply_rope_with_cos_sin_cache_inplace,
    "split_qkv_rmsnorm_mrope": split_qkv_rmsnorm_mrope,
    "fused_rope_qk_mqa": fused_rope_qk_mqa,
    "split_qkv_tp_rmsnorm_rope": split_qkv_tp_rmsnorm_rope,
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
