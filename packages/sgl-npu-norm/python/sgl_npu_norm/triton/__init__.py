"""Triton kernels of every op, run on cuda / npu tensors (see ``_accelerator.py``).

Each function takes exactly the op schema's arguments, writes into the preallocated outputs and returns None.
"""

from .activation import silu_and_mul, swiglu_oai, swiglu_quant
from .norm import add_rmsnorm, fused_add_rmsnorm, rmsnorm, split_sum_squares
from .rope import head_norm_rope, launch_head_norm_rope

__all__ = [
    "add_rmsnorm",
    "fused_add_rmsnorm",
    "head_norm_rope",
    "launch_head_norm_rope",
    "rmsnorm",
    "silu_and_mul",
    "split_sum_squares",
    "swiglu_oai",
    "swiglu_quant",
]
