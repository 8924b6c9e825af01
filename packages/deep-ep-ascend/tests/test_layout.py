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
