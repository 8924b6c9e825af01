"""Triton helpers shared by the wheels' kernels (import only where Triton is available)."""

from __future__ import annotations

import triton
import triton.language as tl


def num_warps(block: int) -> int:
    # about 8 elements per thread for wide rows; a single warp for narrow ones
    return max(1, min(block // 256, 8))


@triton.jit
def round_half_even(v):
    # 1.5 * 2**23: adding it leaves no fraction bits, so the fp32 add rounds to an integer, ties to even
    # (valid for |v| < 2**22; callers clamp first)
    return (v + 12582912.0) - 12582912.0


@triton.jit
def to_dtype(v, dtype: tl.constexpr):
    """fp32 ``v`` rounded to nearest-even ``dtype``. bf16 is rounded with integer ops because Triton's
    interpreter truncates fp32 -> bf16; this is exact on every backend and cheap in memory-bound kernels."""
    if dtype == tl.bfloat16:
        bits = v.to(tl.uint32, bitcast=True)
        rounded = bits + 0x7FFF + ((bits >> 16) & 1)
        bits = tl.where(v == v, rounded, bits | 0x400000)  # NaN stays a (quiet) NaN
        return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(dtype)
