"""Times the Triton attention kernels' launch parameters on a GPU (never part of CI; see ci/gpu_check.sh).

    python tune_triton.py [--out DIR]

For each op at the benchmark's shapes (bench_attention.py, bf16) and each variant of the module constants in
``sgl_npu_attention.triton.attention`` / ``.mla``: the relative error ``|out - ref| / |ref|`` against
reference.py and the median device time (``triton.testing.do_bench``). The defaults are the first variant of each
op. Prints a markdown table and writes it to ``<out>/tune_triton.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_attention as bench  # noqa: E402
from sgl_npu_attention import reference as ref  # noqa: E402
from sgl_npu_attention.triton import attention, mla  # noqa: E402

SHAPES = {
    "decode": [(16, "32/8", 4096), (1, "32/8", 4096), (64, "32/8", 1024), (16, "16/1", 4096)],
    "extend": [(2048, "32/8"), (4096, "32/8")],
    "mla": [(16, 16, 4096), (16, 128, 4096), (1, 128, 4096)],
}
VARIANTS = {  # module, {constant: value}; the first is the committed default
    "decode": (attention, [
        {"DECODE_BLOCK_N": 32, "DECODE_WARPS": 4, "DECODE_PROGRAMS": 512},
        {"DECODE_BLOCK_N": 64, "DECODE_WARPS": 4, "DECODE_PROGRAMS": 512},
        {"DECODE_BLOCK_N": 128, "DECODE_WARPS": 8, "DECODE_PROGRAMS": 512},
        {"DECODE_BLOCK_N": 32, "DECODE_WARPS": 8, "DECODE_PROGRAMS": 512},
        {"DECODE_BLOCK_N": 32, "DECODE_WARPS": 4, "DECODE_PROGRAMS": 1024},
    ]),
    "extend": (attention, [
        {"EXTEND_BLOCK_M": 128, "EXTEND_BLOCK_N": 32, "EXTEND_WARPS": 4},
        {"EXTEND_BLOCK_M": 128, "EXTEND_BLOCK_N": 64, "EXTEND_WARPS": 8},
        {"EXTEND_BLOCK_M": 128, "EXTEND_BLOCK_N": 64, "EXTEND_WARPS": 4},
        {"EXTEND_BLOCK_M": 64, "EXTEND_BLOCK_N": 32, "EXTEND_WARPS": 4},
    ]),
    "mla": (mla, [  # WIDE_BLOCK_H = 16: every batch takes 16 heads per program
        {"WIDE_BLOCK_H": 32, "BLOCK_N": 64, "WARPS": 8, "SPLIT_KEYS": 256},
        {"WIDE_BLOCK_H": 16, "BLOCK_N": 64, "WARPS": 8, "SPLIT_KEYS": 256},
        {"WIDE_BLOCK_H": 64, "BLOCK_N": 32, "WARPS": 8, "SPLIT_KEYS": 256},
        {"WIDE_BLOCK_H": 32, "BLOCK_N": 64, "WARPS": 4, "SPLIT_KEYS": 256},
    ]),
}  # fmt: skip


def reference_of(op, args):
    if op == "decode":
        return ref.decode_attention(*args, bench.HEAD_DIM**-0.5, None, -1)
    if op == "extend":
        return ref.extend_attention(*args, bench.HEAD_DIM**-0.5, True, None, -1)
    return ref.decode_mla(*args, 0.07)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--ops", default=",".join(SHAPES))
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("tune_triton.py needs a CUDA GPU")
    from triton.testing import do_bench, do_bench_cudagraph

    lines = [
        f"# tune_triton\n\n{torch.cuda.get_device_name()}, torch {torch.__version__}\n",
        "µs: launched from Python (`do_bench`); µs (graph): replayed from a CUDA graph (`do_bench_cudagraph`), the"
        " device time alone; GB/s and TFLOP/s from µs (graph).\n",
        "| op | shape | variant | µs | µs (graph) | rel. error | GB/s | TFLOP/s |",
        "|---|---|---|--:|--:|--:|--:|--:|",
    ]
    for op in args.ops.split(","):
        module, variants = VARIANTS[op]
        default = dict(variants[0])
        for shape in SHAPES[op]:
            with torch.device("cuda"):  # built there, timed outside (a default device slows every torch call)
                case = getattr(bench, op)(*shape, torch.bfloat16)
                want = reference_of(op, case.args).float()
            for variant in variants:
                for name, value in variant.items():
                    setattr(module, name, value)
                out = case.out().float()
                err = ((out - want).norm() / want.norm()).item()
                us = do_bench(case.out, warmup=25, rep=100, return_mode="median") * 1e3
                try:  # replayed from a CUDA graph: device time without the Python launch cost (as a server runs)
                    graph_us = f"{do_bench_cudagraph(case.out, rep=100, return_mode='median') * 1e3:.1f}"
                except Exception as e:  # noqa: BLE001 (a capture failure is reported, not fatal)
                    graph_us = f"capture failed: {type(e).__name__}"
                device_us = float(graph_us) if graph_us[0].isdigit() else us
                tflops = f"{case.flops / device_us / 1e6:.1f}" if case.flops else ""
                label = " ".join(f"{k.split('_')[-1] if op != 'mla' else k}={v}" for k, v in variant.items())
                row = f"| {op} | {'x'.join(map(str, shape))} | {label} | {us:.1f} | {graph_us} | {err:.1e} | "
                lines.append(row + f"{case.nbytes / device_us / 1e3:.0f} | {tflops} |")
                print(lines[-1], flush=True)
            for name, value in default.items():
                setattr(module, name, value)
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_triton.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
