"""Times the Triton RoPE primitive's tile size on a GPU (never part of CI; see ci/gpu_check.sh).

    python tune_rope_triton.py [--out DIR]

For the RoPE ops of bench_rope.py at 4096 tokens (bf16) and each ``TILE_ELEMENTS`` x ``MIN_PROGRAMS`` of
``sgl_npu_norm.triton.rope`` (tokens x head width per program, the head width alone being one token per program;
the programs below which heads are not looped inside one): the relative error against reference.py and the
device time from CUDA-graph replays (``sgl_npu_core.bench.device_us``). Prints a markdown table and writes it to
``<out>/tune_rope_triton.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_rope as bench  # noqa: E402
from sgl_npu_core.bench import device_us  # noqa: E402
from sgl_npu_norm.triton import rope  # noqa: E402

TILES = [128, 256, 512, 1024, 2048, 4096]
MIN_PROGRAMS = [1 << 30, 4096, 1024, 256]  # 1 << 30: one head per program


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--ops", default=",".join(bench.OPS))
    p.add_argument("--tiles", default=",".join(map(str, TILES)))
    p.add_argument("--min-programs", default=",".join(map(str, MIN_PROGRAMS)))
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("tune_rope_triton.py needs a CUDA GPU")
    default = rope.TILE_ELEMENTS, rope.MIN_PROGRAMS
    lines = [
        f"# tune_rope_triton\n\n{torch.cuda.get_device_name()}, torch {torch.__version__}, {args.tokens} tokens\n",
        "| op | model | TILE_ELEMENTS | MIN_PROGRAMS | µs (graph) | rel. error | GB/s |",
        "|---|---|--:|--:|--:|--:|--:|",
    ]
    for op in args.ops.split(","):
        for model in bench.MODELS:
            with torch.device("cuda"):
                case = bench.OPS[op](args.tokens, model, torch.bfloat16)
            variants = [(int(t), int(m)) for t in args.tiles.split(",") for m in args.min_programs.split(",")]
            for tile, min_programs in variants:
                rope.TILE_ELEMENTS, rope.MIN_PROGRAMS = tile, min_programs
                got = case.out()
                err = "– (in place)"
                if got is not None:
                    want = case.reference(*case.args)
                    pairs = zip(got, want, strict=True) if isinstance(got, tuple) else [(got, want)]
                    err = f"{max(((g.float() - w.float()).norm() / w.float().norm()).item() for g, w in pairs):.1e}"
                (us,) = device_us([case.out])
                row = f"| {op} | {model} | {tile} | {min_programs} | {us:.1f} | {err} | {case.nbytes / us / 1e3:.0f} |"
                lines.append(row)
                print(lines[-1], flush=True)
            rope.TILE_ELEMENTS, rope.MIN_PROGRAMS = default
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_rope_triton.md").write_text(text)


if __name__ == "__main__":
    main()
