"""Ascend's expanded normal-mode layout (``dispatch(..., layout="expanded")``): one received row per (token, local
expert), expert-major, each expert's rows in the DeepEP order (source rank, then source token, ascending), and a
combine weighted by the top-k weights that travelled with the rows.

It is built on the DeepEP form: the deduplicated rows arrive as usual, then are expanded locally; combine first
sums each token's expanded rows on the expert side (fp32, k order) and returns those fp32 partial sums, which the
source adds in rank order, so the result is rounded once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _meta

_copy_rows = torch.ops.deep_ep.copy_rows.default
_reduce_rows = torch.ops.deep_ep.reduce_rows.default


class ExpandedHandle(NamedTuple):
    base: object  # the DispatchHandle of the deduplicated exchange
    source_row: torch.Tensor  # int64 [A]: the received row each expanded row copies
    slots: torch.Tensor  # int64 [Nrecv, K]: the expanded row of each (received row, k), or -1
    weights: torch.Tensor  # fp32 [Nrecv, K]: its weight (0 where -1)


def expand(recv, recv_topk_idx, recv_topk_weights, experts_per_rank: int, alignment: int, pool):
    """``(recv_x, expert [A], weights [A], counts list, slots, weights matrix, source_row)`` from the DeepEP form."""
    n, k = recv_topk_idx.shape
    valid = (recv_topk_idx >= 0).flatten()
    pair = torch.nonzero(valid).flatten()
    expert = recv_topk_idx.flatten()[pair].long()
    order = torch.argsort(expert * max(n, 1) + pair // k, stable=True)
    pair, expert = pair[order], expert[order]
    source_row = pair // k
    slots = torch.full((n * k,), -1, dtype=torch.int64)
    slots[pair] = torch.arange(len(pair))
    weights = torch.where(recv_topk_idx >= 0, recv_topk_weights.float(), 0.0).contiguous()
    rows = gather(recv, source_row, pool)
    counts = torch.bincount(expert, minlength=experts_per_rank).tolist()
    counts = [(c + alignment - 1) // alignment * alignment for c in counts]
    return rows, expert, weights.flatten()[pair], counts, slots.view(n, k), weights, source_row


def gather(recv: list[torch.Tensor], source_row: torch.Tensor, pool) -> list[torch.Tensor]:
    """The rows ``source_row`` of every received tensor, into pooled outputs."""
    out = []
    for i, t in enumerate(recv):
        dst = pool.empty(f"expanded{i}", (len(source_row), *t.shape[1:]), t.dtype)
        rows = dst.view(len(source_row), -1) if t.dim() > 1 else dst.view(-1, 1)
        src = t.view(t.shape[0], -1) if t.dim() > 1 else t.view(-1, 1)
        _copy_rows(src.view(torch.uint8), source_row, rows.view(torch.uint8), None)
        out.append(dst)
    return out


def partial_sums(x: torch.Tensor, handle: ExpandedHandle) -> torch.Tensor:
    """fp32 ``[Nrecv, H]``: each received row's weighted sum of its expanded rows, in k order."""
    a = handle.source_row.numel()
    _meta.check(x.dim() == 2 and x.shape[0] == a, f"x must be [{a}, hidden] (the expanded rows), got {list(x.shape)}")
    out = torch.empty(handle.slots.shape[0], x.shape[1], dtype=torch.float32)
    _reduce_rows(x, x[:0], handle.slots, handle.weights, None, out)
    return out
