"""How a benchmark's % copy moves with the machine's phase: `python tools/phase_sweep.py rope 4096 300`.

This machine's copy bandwidth drifts between ~23 and ~65 GB/s over minutes, and a compute-bound kernel does not
drift with it, so one table's % copy says little about how a row fares in another phase. This times every op of a
suite (sgl-npu-norm's `norm` or `rope` benchmarks) at one row count, each in turn with a copy of its bytes, sweep
after sweep for the given seconds, and prints per op the smallest, 10th-percentile and median % copy with the range
of GB/s seen; the same against a copy of 64 MB timed in turn too (% mem copy: the machine's memory bandwidth, where
a row that fits the caches has its same-bytes copy run from them). Options after the seconds: `--ops a,b` (a
subset), `--shapes 7168,qwen3-8b` (the suite's second shape parameter: hidden size or model), `--dtype bfloat16`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packages" / "sgl-npu-norm" / "benchmarks"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=["norm", "rope"])
    parser.add_argument("rows", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--ops", default=None)
    parser.add_argument("--shapes", default=None)
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args(argv)

    from sgl_npu_core.bench import copy_call, mem_copy_call, mem_copy_gbs, time_us_alternating

    if args.suite == "rope":
        import bench_rope as bench

        shapes = args.shapes.split(",") if args.shapes else list(bench.MODELS)
    else:
        import bench_norm as bench

        shapes = [int(h) for h in args.shapes.split(",")] if args.shapes else list(bench.HIDDEN)
    ops = args.ops.split(",") if args.ops else list(bench.OPS)
    dtype = getattr(torch, args.dtype)
    cases = {(op, shape): bench.OPS[op](args.rows, shape, dtype) for op in ops for shape in shapes}
    copies = {key: copy_call(case.nbytes // 2) for key, case in cases.items()}
    mem_copy = mem_copy_call()
    # (kernel GB/s, same-bytes copy GB/s, memory copy GB/s)
    samples: dict[tuple, list[tuple[float, float, float]]] = {key: [] for key in cases}
    end = time.perf_counter() + args.seconds
    sweeps = 0
    while time.perf_counter() < end or sweeps == 0:
        for key, case in cases.items():
            us, copy_us, mem_us = time_us_alternating([case.out, copies[key], mem_copy], min_time_s=0.2)
            samples[key].append((case.nbytes / us / 1e3, case.nbytes / copy_us / 1e3, mem_copy_gbs(mem_us)))
        sweeps += 1

    print(f"{sweeps} sweeps of {args.seconds:g} s, {args.rows} rows, {args.dtype}, {torch.get_num_threads()} threads")
    print(
        "| op | shape | % copy min / p10 / median | % mem copy min / p10 / median | GB/s | copy GB/s | mem copy GB/s |"
    )
    print("|---|---|--:|--:|--:|--:|--:|")

    def spread(pct: list[float]) -> str:
        pct = sorted(pct)
        return f"{pct[0]:.0f} / {pct[len(pct) // 10]:.0f} / {statistics.median(pct):.0f}"

    def span(values: list[float]) -> str:
        return f"{min(values):.1f}-{max(values):.1f}"

    for (op, shape), runs in samples.items():
        kernel, copy, mem = ([run[i] for run in runs] for i in range(3))
        same = spread([100 * g / c for g, c in zip(kernel, copy, strict=True)])
        memory = spread([100 * g / m for g, m in zip(kernel, mem, strict=True)])
        print(f"| {op} | {shape} | {same} | {memory} | {span(kernel)} | {span(copy)} | {span(mem)} |")


if __name__ == "__main__":
    main()
