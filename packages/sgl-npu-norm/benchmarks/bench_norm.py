"""Benchmark sgl-npu-norm's kernels against their PyTorch references, eager and under torch.compile.

    python bench_norm.py --out docs/benchmarks [--quick] [--ops rmsnorm,silu_and_mul] [--ref-max-mb 100]
        [--threads 1] [--device cuda] [--dtypes bfloat16]

Writes norm.md / norm.json / norm.png (norm-cuda.* with ``--device cuda``: the Triton kernels, timed on the
GPU) and prints the table. For the gated ops ``hidden`` is the output width
d (the input is [rows, 2d]).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import sgl_npu_norm as ops
import torch
from sgl_npu_core.bench import Report, Row, compiled, copy_bandwidth_gbs, time_us
from sgl_npu_norm import reference as ref

REPO = Path(__file__).resolve().parents[3]
ROWS, HIDDEN, DTYPES = (1, 128, 4096), (4096, 7168), (torch.bfloat16, torch.float16)
NOTES = [
    "µs (out=): preallocated outputs; µs (fresh): outputs allocated by the call (page faults included).",
    "MB: reads + writes of the data tensors, each counted once; % copy: GB/s over that of `dst.copy_(src)` "
    "moving the same bytes in this run.",
    "eager / compile: the PyTorch reference called as a user calls it, eagerly and through "
    "`torch.compile(dynamic=False)`; × = reference time / kernel time (fresh outputs, as the reference "
    "allocates too). fused_add_rmsnorm is in place, so it has no fresh time; its reference is functional.",
]


@dataclasses.dataclass
class Case:
    """One op at one shape: the kernel with and without preallocated outputs, the reference call, the bytes."""

    out: Callable[[], object]
    fresh: Callable[[], object] | None  # None: in place, nothing to allocate
    reference: Callable
    args: tuple
    nbytes: int


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


def measure(name: str, case: Case, shape: str, dtype: torch.dtype, copy_gbs: float, refs: bool, timing: dict) -> Row:
    us = time_us(case.out, **timing)
    us_fresh = None if case.fresh is None else time_us(case.fresh, **timing)
    eager_us = compile_us = None
    if refs:
        eager_us = time_us(lambda: case.reference(*case.args), **timing)
        fn = compiled(case.reference)
        compile_us = time_us(lambda: fn(*case.args), **timing)
    return Row(
        name, shape, str(dtype).removeprefix("torch."), us, us_fresh, case.nbytes, copy_gbs, eager_us, compile_us
    )


def main(argv: list[str] | None = None) -> Report:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks", help="output dir (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="one small shape in bf16, short timings (a smoke test)")
    p.add_argument("--ops", default=",".join(OPS), help="comma-separated subset of: %(default)s")
    p.add_argument(
        "--ref-max-mb",
        type=float,
        default=float("inf"),
        help="skip the eager / compiled references where the op moves more MB than this",
    )
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="where tensors live: cpu (C++ kernels) or cuda (Triton kernels)")
    p.add_argument("--dtypes", default=",".join(str(d).removeprefix("torch.") for d in DTYPES))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu":  # (a default device costs a torch-function mode on every call: not on the CPU)
        torch.set_default_device(args.device)  # every tensor below, and the harness's copy yardstick

    names = [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = set(names) - set(OPS)
    if unknown:
        p.error(f"unknown ops {sorted(unknown)}; choose from {list(OPS)}")
    shapes = [(128, 4096)] if args.quick else [(r, h) for r in ROWS for h in HIDDEN]
    dtypes = [getattr(torch, n.strip()) for n in args.dtypes.split(",") if n.strip()]
    dtypes = dtypes[:1] if args.quick else dtypes
    timing = {"min_time_s": 0.05} if args.quick else {}

    report = Report("norm" if args.device == "cpu" else f"norm-{args.device}", notes=NOTES)
    copy_gbs: dict[int, float] = {}  # total bytes moved -> copy GB/s for that amount
    for name in names:
        for dtype in dtypes:
            for rows, h in shapes:
                case = OPS[name](rows, h, dtype)
                if case.nbytes not in copy_gbs:  # a copy of nbytes/2 reads and writes nbytes in all
                    copy_gbs[case.nbytes] = copy_bandwidth_gbs(case.nbytes // 2, **timing)
                refs = case.nbytes / 1e6 <= args.ref_max_mb
                row = report.add(measure(name, case, f"{rows}x{h}", dtype, copy_gbs[case.nbytes], refs, timing))
                print(f"{row.label}: {row.us:.1f} us, {row.pct_copy:.0f}% copy", file=sys.stderr, flush=True)
    paths = report.write(args.out)
    report.print()
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
