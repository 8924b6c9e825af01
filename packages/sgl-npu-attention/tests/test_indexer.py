"""lightning_indexer (CPU kernel; with SGL_NPU_TEST_DEVICE=cuda the device path) against the fp32 reference built
from gathered pages: permuted block tables, ragged lengths around page boundaries, decode and prefill tokens.

On small-integer inputs every score is exact whatever the summation order, so the kernel must reproduce the
reference's indices exactly, ties (which abound) broken by the lower position. On random inputs near-equal scores
may swap between summation orders, so there the check is that the picks are a top-k by the fp64 scores."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import _accelerator
from sgl_npu_attention import reference as ref
from sgl_npu_attention.testing import paged_cache
from sgl_npu_core.testing import FLOAT_DTYPES

# (new query tokens, all keys) per request: decode at page boundaries, a prefill, none, an extend across pages
REQUESTS = [(1, 1), (1, 15), (1, 16), (1, 17), (4, 4), (0, 6), (6, 40)]


def _inputs(requests, heads, d, dtype, page=16, integers=False, weights_dtype=None):
    k_cache, _, table, seq_lens = paged_cache([n for _, n in requests], page, 1, d, 1, torch.float32)
    cu = torch.tensor([0] + [q for q, _ in requests]).cumsum(0).to(torch.int32)
    tokens = int(cu[-1])
    if integers:
        q, k_cache = torch.randint(-2, 3, (tokens, heads, d)).float(), torch.randint(-2, 3, k_cache.shape).float()
        w = torch.randint(-2, 3, (tokens, heads)).float()
    else:
        q, w = torch.randn(tokens, heads, d), torch.randn(tokens, heads)
    return q.to(dtype), k_cache.to(dtype), w.to(weights_dtype or dtype), table, cu, seq_lens


def assert_top_k(got, args, sparse_count):
    """Each row: distinct visible positions, then -1; their fp64 scores are the best ones, best first (up to a
    tolerance for summation order)."""
    q, k_cache, w, table, cu, lens = args
    for b in range(len(lens)):
        start, end, length = int(cu[b]), int(cu[b + 1]), int(lens[b])
        if end == start:
            continue
        keys = ref.gather_pages(k_cache, table[b], length)[:, 0].double()
        dots = torch.einsum("thd,sd->ths", q[start:end].double(), keys).relu()
        scores = (dots * w[start:end].double().unsqueeze(-1)).sum(1)
        for i in range(end - start):
            visible = length - (end - start) + i + 1
            n = min(visible, sparse_count)
            row = got[start + i].long()
            picks = row[:n]
            assert (row[n:] == -1).all() and ((picks >= 0) & (picks < visible)).all(), row
            assert len(set(picks.tolist())) == n, "repeated positions"
            s = scores[i, :visible]
            tol = 1e-4 * max(1.0, s.abs().max().item())
            best = torch.sort(s, descending=True).values[:n]
            assert (s[picks] - best).abs().max() <= tol, "not the best keys"
            assert (s[picks][1:] <= s[picks][:-1] + tol).all(), "not best first"


@pytest.mark.usefixtures("on_test_device")
@pytest.mark.parametrize("sparse_count", [1, 7, 64])
@pytest.mark.parametrize("heads,d", [(8, 32), (5, 16)], ids=["8x32", "5x16"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_exact_on_integers(dtype, heads, d, sparse_count):
    args = _inputs(REQUESTS, heads, d, dtype, integers=True)
    got = ops.lightning_indexer(*args, sparse_count=sparse_count)
    assert got.dtype == torch.int32 and got.shape == (args[0].shape[0], sparse_count)
    torch.testing.assert_close(got, ref.lightning_indexer(*args, sparse_count), rtol=0, atol=0)


@pytest.mark.usefixtures("on_test_device")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_deepseek_geometry(dtype):
    # 64 heads of 128, pages of 64, weights in fp32 (as the model computes them)
    args = _inputs([(1, 63), (1, 65), (3, 130)], 64, 128, dtype, page=64, weights_dtype=torch.float32)
    assert_top_k(ops.lightning_indexer(*args, sparse_count=50), args, 50)


def test_long_sequence_prefill_and_decode():
    # 4097 keys: the key axis split over the cores, 2048 kept; a few prefill tokens at its end and a decode token
    args = _inputs([(3, 4097), (1, 300)], 16, 64, torch.bfloat16, page=128)
    got = ops.lightning_indexer(*args)
    assert_top_k(got, args, 2048)
    assert (got[3, 300:] == -1).all() and (got[:3] >= 0).all()


def test_scores_beyond_one_wave():
    # 3500 prefill tokens seeing 1501 .. 5000 keys: 11.4M scores, more than the kernel buffers at once (8 Mi), so
    # the tokens are scored and selected in two waves
    args = _inputs([(3500, 5000), (1, 5)], 2, 8, torch.float32, page=128, integers=True)
    got = ops.lightning_indexer(*args, sparse_count=16)
    torch.testing.assert_close(got, ref.lightning_indexer(*args, 16), rtol=0, atol=0)


def test_nan_scores_rank_first():
    args = _inputs([(2, 30)], 4, 16, torch.float32)
    args[0][1, 2, 5] = float("nan")  # every score of token 1 is NaN: ranks as +inf, ties by position
    got = ops.lightning_indexer(*args, sparse_count=8)
    assert got[1].tolist() == list(range(8))
    torch.testing.assert_close(got, ref.lightning_indexer(*args, 8), rtol=0, atol=0)


def test_out_and_strided_q():
    q, k_cache, w, table, cu, lens = _inputs(REQUESTS, 4, 16, torch.float16, integers=True)
    q = torch.cat([q, q], dim=-1)[..., :16]  # tokens and heads strided
    out = torch.full((q.shape[0], 9), 5, dtype=torch.int32)
    assert ops.lightning_indexer(q, k_cache, w, table, cu, lens, 9, out=out) is out
    torch.testing.assert_close(out, ref.lightning_indexer(q, k_cache, w, table, cu, lens, 9), rtol=0, atol=0)


def test_device_path_matches():
    # the cuda / npu impl (the reference as device ops, with the data checks), run here on CPU tensors
    args = _inputs(REQUESTS, 8, 32, torch.bfloat16, integers=True)
    out = torch.empty(args[0].shape[0], 16, dtype=torch.int32)
    _accelerator._indexer(*args, 16, out)
    torch.testing.assert_close(out, ops.lightning_indexer(*args, sparse_count=16), rtol=0, atol=0)
