"""Readable references of the layout and of what normal-mode dispatch delivers (the tests' specification)."""

from __future__ import annotations

import torch


def dispatch_layout(topk_idx: torch.Tensor, num_experts: int, num_ranks: int):
    """``(num_tokens_per_rank [R] int32, num_tokens_per_expert [E] int32, is_token_in_rank [N, R] bool)``: expert
    e lives on rank ``e // (E / R)``; a token counts once per rank however many of its experts live there."""
    per_rank = num_experts // num_ranks
    valid = topk_idx >= 0
    rank_of = torch.where(valid, topk_idx // per_rank, -1)
    is_token_in_rank = torch.zeros(topk_idx.shape[0], num_ranks, dtype=torch.bool)
    for r in range(num_ranks):
        is_token_in_rank[:, r] = (rank_of == r).any(dim=1)
    tokens_per_expert = torch.bincount(topk_idx[valid].long(), minlength=num_experts).to(torch.int32)
    return is_token_in_rank.sum(0).to(torch.int32), tokens_per_expert, is_token_in_rank


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token int8 (the Ascend recipe): ``s = 127 / (max|x| + 1e-12)``, ``q = rint(x * s)``, scale ``1 / s``,
    each step in fp32, the division as ``127 * (1 / d)`` (what ``127 / tensor`` computes in torch)."""
    xf = x.float()
    s = torch.reciprocal(xf.abs().amax(dim=1, keepdim=True) + 1e-12) * 127.0
    return torch.round(xf * s).to(torch.int8), torch.reciprocal(s).squeeze(1)


def received_rows(inputs: list[tuple], rank: int, num_experts: int):
    """What ``rank`` receives from a normal-mode dispatch where rank s sends ``inputs[s] = (x, topk_idx,
    topk_weights)``: ``(x rows, local topk_idx, topk_weights, (source rank, source token) pairs)`` grouped by
    source rank, then source token, ascending; local ids are ``e - rank * L`` for experts on ``rank``, else -1
    (weight 0)."""
    per_rank = num_experts // len(inputs)
    xs, idxs, weights, sources = [], [], [], []
    for s, (x, topk_idx, topk_weights) in enumerate(inputs):
        mine = (topk_idx >= 0) & (topk_idx // per_rank == rank)
        for t in torch.nonzero(mine.any(dim=1)).flatten().tolist():
            xs.append(x[t])
            idxs.append(torch.where(mine[t], topk_idx[t] - rank * per_rank, -1))
            weights.append(torch.where(mine[t], topk_weights[t], 0.0))
            sources.append((s, t))
    if not xs:
        x0, k = inputs[0][0], inputs[0][1].shape[1]
        return x0.new_empty(0, x0.shape[1]), torch.empty(0, k, dtype=torch.int64), torch.empty(0, k), sources
    return torch.stack(xs), torch.stack(idxs), torch.stack(weights), sources


def low_latency_received(topk_idxs: list[torch.Tensor], rank: int, num_experts: int) -> list[list[tuple[int, int]]]:
    """What ``rank`` receives from a low-latency dispatch where rank s routes with ``topk_idxs[s]``: for each local
    expert, its ``(source rank, source token)`` rows in slot order (source ascending, then token ascending)."""
    local = num_experts // len(topk_idxs)
    rows = []
    for i in range(local):
        expert = rank * local + i
        rows.append([(s, t) for s, idx in enumerate(topk_idxs) for t in range(idx.shape[0]) if expert in idx[t]])
    return rows


def low_latency_combined(x: torch.Tensor, topk_idx: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
    """Low-latency combine when every expert returns its input row unchanged: ``x * sum of the valid weights``, in
    fp32 and in top-k order."""
    acc = torch.zeros(x.shape, dtype=torch.float32)
    for k in range(topk_idx.shape[1]):
        acc += torch.where(topk_idx[:, k : k + 1] >= 0, topk_weights[:, k : k + 1].float(), 0.0) * x.float()
    return acc.to(x.dtype)
