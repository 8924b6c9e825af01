"""Per-head batched matmul in token-major layout: MLA's absorbed W_UK / W_UV projections."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import check_dims
from sgl_npu_core.memory import empty

_batch_matmul_transpose = torch.ops.sgl_npu_attention.batch_matmul_transpose.default


def batch_matmul_transpose(a, b, out=None) -> torch.Tensor:
    """``out[m, h] = a[m, h] @ b[h]``: ``torch.bmm(a.transpose(0, 1), b).transpose(0, 1)`` without the transposes.

    Parameters
    ----------
    a : [M, B, K] float32 / float16 / bfloat16, last dim contiguous (M tokens, B heads)
    b : [B, K, N], a's dtype, last dim contiguous (one K x N matrix per head)
    out : optional preallocated [M, B, N] of a's dtype, last dim contiguous; must not overlap a or b

    Products are accumulated in fp32 and rounded once to the output dtype.
    """
    if out is None:
        m, heads, _ = check_dims(a, 3, "a", "[M, B, K]")
        out = empty(m, heads, check_dims(b, 3, "b", "[B, K, N]")[-1], dtype=a.dtype, device=a.device)
    _batch_matmul_transpose(a, b, out)
    return out
