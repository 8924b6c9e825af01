"""Benchmark sgl-npu-norm's kernels against their PyTorch references, eager and under torch.compile.

    python bench_norm.py --out docs/benchmarks [--quick] [--ops rmsnorm,silu_and_mul] [--ref-max-mb 100]
        [--threads 1] [--device cuda] [--dtypes bfloat16]

Writes norm.md / norm.json / norm.png (norm-cuda.* with ``--device cuda``: the Triton kernels, timed on the
GPU) and prints the table. For the gated ops ``hidden`` is the output width
d (the input is [rows, 2d]).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sgl_npu_norm as ops
import torch
from sgl_npu_core.bench import SUITE_NOTES, Case, Report, run_suite
from sgl_npu_norm import reference as ref

REPO = Path(__file__).resolve().parents[3]
ROWS, HIDDEN, DTYPES = (1, 128, 4096), (4096, 7168), (torch.bfloat16, torch.float16)
NOTES = [
    *SUITE_NOTES,
    "fused_add_rmsnorm is in place, so it has no fresh time; its reference is functional.",
]


def _randn(*shape, dtype):
    return torch.randn(*shape, dtype=dtype)


def _bytes(*tensors: torch.Tensor) -> int:
    return sum(t.nbytes for t in tensors)


def rmsnorm(rows, h, dtype) -> Case:
    x, w = _randn(rows, h, dtype=dtype), _randn(h, dtype=dtype)
    out = torch.empty_like(x)
    return Case(lambda: ops.rmsnorm(x, w, out=out), lambda: ops.rmsnorm(x, w), ref.rmsnorm, (x, w), _bytes(x, w, out))


def gemma_rmsnorm(rows, h, dtype) -> Case:
    x, w = _randn(rows, h, dtype=dtype), _randn(h, dtype=dtype)
    out = torch.empty_like(x)
    return Case(
        lambda: ops.gemma_rmsnorm(x, w, out=out),
        lambda: ops.gemma_rmsnorm(x, w),
        ref.gemma_rmsnorm,
        (x, w),
        _bytes(x, w, out),
    )


def fused_add_rmsnorm(rows, h, dtype) -> Case:
    x, res, w = _randn(rows, h, dtype=dtype), _randn(rows, h, dtype=dtype), _randn(h, dtype=dtype)
    # Reads x, residual, weight; writes x and residual back. Repeated calls grow residual (fp16 reaches inf/NaN
    # after ~1e5 calls): SIMD runs NaN at full speed, so the timings stand.
    return Case(
        lambda: ops.fused_add_rmsnorm(x, res, w), None, ref.fused_add_rmsnorm, (x, res, w), _bytes(x, res, w, x, res)
    )


def add_rmsnorm_bias(rows, h, dtype) -> Case:
    x, res = _randn(rows, h, dtype=dtype), _randn(rows, h, dtype=dtype)
    w, b = _randn(h, dtype=dtype), _randn(h, dtype=dtype)
    out, added = torch.empty_like(x), torch.empty_like(x)
    return Case(
        lambda: ops.add_rmsnorm_bias(x, res, w, b, out=out, added=added),
        lambda: ops.add_rmsnorm_bias(x, res, w, b),
        ref.add_rmsnorm_bias,
        (x, res, w, b),
        _bytes(x, res, w, b, out, added),
    )


def _gated(kernel: Callable, reference: Callable) -> Callable[..., Case]:
    """silu_and_mul and swiglu_oai: [rows, 2d] -> [rows, d] of the same dtype."""

    def case(rows, d, dtype) -> Case:
        x = _randn(rows, 2 * d, dtype=dtype)
        out = torch.empty(rows, d, dtype=dtype)
        return Case(lambda: kernel(x, out=out), lambda: kernel(x), reference, (x,), _bytes(x, out))

    return case


def swiglu_quant(rows, d, dtype) -> Case:
    x = _randn(rows, 2 * d, dtype=dtype)
    q, scale = torch.empty(rows, d, dtype=torch.int8), torch.empty(rows, dtype=torch.float32)
    return Case(
        lambda: ops.swiglu_quant(x, out=(q, scale)),
        lambda: ops.swiglu_quant(x),
        ref.swiglu_quant,
        (x,),
        _bytes(x, q, scale),
    )


OPS = {
    "rmsnorm": rmsnorm,
    "fused_add_rmsnorm": fused_add_rmsnorm,
    "add_rmsnorm_bias": add_rmsnorm_bias,
    "gemma_rmsnorm": gemma_rmsnorm,
    "silu_and_mul": _gated(ops.silu_and_mul, ref.silu_and_mul),
    "swiglu_quant": swiglu_quant,
    "swiglu_oai": _gated(ops.swiglu_oai, ref.swiglu_oai),
}


def main(argv: list[str] | None = None) -> Report:
    shapes = [(r, h) for r in ROWS for h in HIDDEN]
    out = REPO / "docs" / "benchmarks"
    return run_suite(
        "norm", OPS, shapes, DTYPES, notes=NOTES, doc=__doc__, quick_shape=(128, 4096), default_out=out, argv=argv
    )


if __name__ == "__main__":
    main()
