"""get_dispatch_layout's kernel (torch.ops.deep_ep) against the reference; malformed input; opcheck."""

import pytest
import torch
from deep_ep import reference as ref

L = torch.ops.deep_ep


def _layout(topk_idx, experts, ranks):
    out = (
        torch.empty(ranks, dtype=torch.int32),
        torch.empty(experts, dtype=torch.int32),
        torch.empty(topk_idx.shape[0], ranks, dtype=torch.bool),
    )
    L.get_dispatch_layout.default(topk_idx, experts, ranks, *out)
    return out


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32], ids=str)
@pytest.mark.parametrize("tokens,experts,ranks,topk", [(0, 8, 2, 2), (37, 32, 4, 4), (128, 256, 16, 8)])
def test_layout_matches_reference(tokens, experts, ranks, topk, index_dtype):
    scores = torch.rand(tokens, experts)
    topk_idx = scores.topk(topk, dim=-1).indices.to(index_dtype)
    if tokens:
        topk_idx[0, -1] = -1  # "no expert" entries
        topk_idx[tokens // 2, :] = -1
    for got, want in zip(_layout(topk_idx, experts, ranks), ref.dispatch_layout(topk_idx, experts, ranks), strict=True):
        assert torch.equal(got, want)


@pytest.mark.parametrize(
    "topk_idx,experts,ranks,needle",
    [
        (torch.tensor([[0, 8]]), 8, 2, "topk_idx"),
        (torch.tensor([[0, -2]]), 8, 2, "topk_idx"),
        (torch.tensor([[0, 1]]), 9, 2, "multiple"),
        (torch.tensor([[0.0, 1.0]]), 8, 2, "int64 or int32"),
        (torch.tensor([0, 1]), 8, 2, "topk_idx must be"),
    ],
)
def test_malformed_input_names_the_argument(topk_idx, experts, ranks, needle):
    with pytest.raises(RuntimeError, match=needle):
        _layout(topk_idx, experts, ranks)


def test_opcheck():
    topk_idx = torch.tensor([[0, 5], [3, -1], [7, 6]])
    out = (torch.empty(4, dtype=torch.int32), torch.empty(8, dtype=torch.int32), torch.empty(3, 4, dtype=torch.bool))
    torch.library.opcheck(L.get_dispatch_layout.default, (topk_idx, 8, 4, *out))


def test_low_latency_routes_place_messages_by_expert_then_token():
    topk_idx = torch.tensor([[3, 0], [0, -1], [2, 3]])  # this rank's routing, as rank 1 of 2 (2 experts each)
    counts = torch.tensor([[1, 0, 0, 2], [2, 0, 1, 2]])  # [ranks, experts]; row 1 is bincount(topk_idx)
    outs = _routes_outputs(5, 6)
    L.low_latency_routes(topk_idx, counts, 1, 8, *outs)
    token, source, dst_row, message_row, combine_row, per_rank, recv_count, layout_range = outs
    assert token.tolist() == [0, 1, 2, 0, 2]  # expert 0: tokens 0, 1; expert 2: token 2; expert 3: tokens 0, 2
    assert source.tolist() == [[0, 1], [1, 2], [2, 4], [0, 0], [2, 5]]  # (token, token * K + k)
    # expert e: local index e % 2 (8 slots each) on rank e // 2, after the counts[0, e] rows of rank 0
    assert dst_row.tolist() == [1, 2, 0, 8 + 2, 8 + 3]
    assert message_row.view(3, 2).tolist() == [[10, 1], [2, -1], [0, 11]]
    # experts 2 and 3 are this rank's: their rows are read from the experts' 2 x 8 outputs; the others come back
    # to row 16 + token * K + k
    assert combine_row.view(3, 2).tolist() == [[10, 16 + 1], [16 + 2, -1], [0, 11]]
    assert per_rank.tolist() == [2, 3]  # messages to rank 0's experts, to rank 1's
    # this rank's experts 2 and 3 receive 0 + 1 and 2 + 2 rows; from each source: (first row << 32) | rows
    assert recv_count.tolist() == [1, 4]
    assert layout_range.tolist() == [[0, 1], [2, (2 << 32) | 2]]


def _routes_outputs(messages: int, entries: int) -> list[torch.Tensor]:
    """token, source, dst_row, message_row, combine_row, per_rank, recv_count, layout_range for low_latency_routes
    (2 ranks of 2 experts)."""
    return [torch.empty(messages, dtype=torch.int64), torch.empty(messages, 2, dtype=torch.int32),
            torch.empty(messages, dtype=torch.int64), torch.empty(entries, dtype=torch.int64),
            torch.empty(entries, dtype=torch.int64), torch.empty(2, dtype=torch.int64),
            torch.empty(2, dtype=torch.int32), torch.empty(2, 2, dtype=torch.int64)]  # fmt: skip


def test_low_latency_returns_group_rows_by_source():
    # 2 local experts, 2 source ranks, 4 slots: expert 0 holds 2 rows of source 0 then 1 of source 1; expert 1
    # holds 3 rows of source 1
    layout_range = torch.tensor([[(0 << 32) | 2, (2 << 32) | 1], [(0 << 32) | 0, (0 << 32) | 3]])
    recv_slot = torch.arange(16, dtype=torch.int32).view(2, 4, 2)[..., 1]  # a strided view, as in the handle
    rows, returned, per_source = torch.full((8,), -7), torch.full((8,), -7), torch.empty(2, dtype=torch.int64)
    L.low_latency_returns(layout_range, recv_slot, rows, returned, per_source)
    assert per_source.tolist() == [2, 4]
    assert rows[:6].tolist() == [0, 1, 2, 4, 5, 6]  # source 0: expert 0's rows; source 1: expert 0's, expert 1's
    assert returned[:6].tolist() == recv_slot.flatten()[rows[:6]].tolist()
    with pytest.raises(RuntimeError, match="outside the 4 slots"):
        L.low_latency_returns(layout_range + 3, recv_slot, rows, returned, per_source)
    with pytest.raises(RuntimeError, match="rows must hold at least 6"):
        L.low_latency_returns(layout_range, recv_slot, rows[:5], returned, per_source)
    torch.library.opcheck(L.low_latency_returns.default, (layout_range, recv_slot, rows, returned, per_source))
    with pytest.raises(RuntimeError, match="rows must not overlap layout_range"):  # read again while rows is written
        L.low_latency_returns(rows[:4].view(2, 2).copy_(layout_range), recv_slot, rows, returned, per_source)


def test_layout_outputs_over_topk_idx_are_refused():
    buf = torch.zeros(32, dtype=torch.uint8)  # topk_idx [4, 1] int64, and is_token_in_rank [4, 4] over its first half
    topk_idx, is_token_in_rank = buf.view(torch.int64).view(4, 1), buf[:16].view(torch.bool).view(4, 4)
    counts = (torch.empty(4, dtype=torch.int32), torch.empty(8, dtype=torch.int32))
    with pytest.raises(RuntimeError, match="is_token_in_rank must not overlap topk_idx"):
        L.get_dispatch_layout.default(topk_idx, 8, 4, *counts, is_token_in_rank)


def test_low_latency_routes_reject_inconsistent_counts():
    topk_idx = torch.tensor([[1, 0]])
    outs = _routes_outputs(2, 2)
    with pytest.raises(RuntimeError, match="does not match topk_idx"):
        L.low_latency_routes(topk_idx, torch.tensor([[1, 0], [0, 0]]), 0, 4, *outs)
    with pytest.raises(RuntimeError, match="more than its 4 slots"):
        L.low_latency_routes(topk_idx, torch.tensor([[1, 1], [4, 0]]), 0, 4, *outs)
    with pytest.raises(RuntimeError, match="is not an expert"):
        L.low_latency_routes(torch.tensor([[5, 0]]), torch.tensor([[1, 1], [0, 0]]), 0, 4, *outs)


@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32], ids=str)
def test_send_rows_match_the_layout(index_dtype):
    experts, ranks = 12, 3
    topk_idx = torch.rand(9, experts).topk(4, dim=-1).indices.to(index_dtype)
    topk_idx[2, 1] = -1
    weights = torch.rand(9, 4)
    _, _, in_rank = ref.dispatch_layout(topk_idx, experts, ranks)
    rows = int(in_rank.sum())
    send_token, idx_rows, weight_rows = (
        torch.empty(rows, dtype=torch.int64),
        topk_idx.new_empty(rows, 4),
        torch.empty(rows, 4),
    )
    L.send_rows(in_rank, topk_idx, weights, experts, send_token, idx_rows, weight_rows)
    dest, want_token = in_rank.t().nonzero(as_tuple=True)  # destination-major, tokens ascending
    assert torch.equal(send_token, want_token)
    local = topk_idx[want_token].long() - dest.unsqueeze(1) * (experts // ranks)
    here = (topk_idx[want_token] >= 0) & (local >= 0) & (local < experts // ranks)
    assert torch.equal(idx_rows.long(), torch.where(here, local, -1))
    assert torch.equal(weight_rows, torch.where(here, weights[want_token], 0.0))
    with pytest.raises(RuntimeError, match="send_token must have shape"):
        L.send_rows(in_rank, None, None, 0, torch.empty(rows + 1, dtype=torch.int64), None, None)
    with pytest.raises(RuntimeError, match="is not an expert"):
        L.send_rows(in_rank, topk_idx * 0 + experts, weights, experts, send_token, idx_rows, weight_rows)


def test_opcheck_of_the_routing_ops():
    topk_idx = torch.tensor([[3, 0], [0, -1], [2, 3]])
    counts = torch.tensor([[1, 0, 0, 2], [2, 0, 1, 2]])
    outs = _routes_outputs(5, 6)
    torch.library.opcheck(L.low_latency_routes.default, (topk_idx, counts, 1, 8, *outs))
    _, _, in_rank = ref.dispatch_layout(topk_idx, 4, 2)
    rows = int(in_rank.sum())
    args = (in_rank, topk_idx, torch.rand(3, 2), 4, torch.empty(rows, dtype=torch.int64),
            torch.empty(rows, 2, dtype=torch.int64), torch.empty(rows, 2))  # fmt: skip
    torch.library.opcheck(L.send_rows.default, args)
