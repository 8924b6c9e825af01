"""Triton kernels of every op, run on cuda / npu tensors (see ``_accelerator.py``).

Each function takes exactly the op schema's arguments, writes into the preallocated outputs and returns None.
"""

from .attention import decode_attention, extend_attention
from .mla import decode_mla

__all__ = ["decode_attention", "decode_mla", "extend_attention"]
