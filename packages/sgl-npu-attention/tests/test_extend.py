"""extend_attention (CPU kernel; with SGL_NPU_TEST_DEVICE=cuda the Triton path) against the reference: prefill,
extend after a cached prefix, chunked prefill across pages, an empty request, causal or not, GQA, D != Dv,
sinks and windows."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import reference as ref
from sgl_npu_attention.testing import paged_cache
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close

pytestmark = pytest.mark.usefixtures("on_test_device")

# (new query tokens, all keys) per request: decode-like, pure prefill, extend after a prefix, none, across pages
REQUESTS = [(1, 1), (5, 5), (17, 40), (0, 9), (3, 130)]


def _inputs(requests, q_heads, kv_heads, d, dv, dtype, page=16):
    k_cache, v_cache, table, seq_lens = paged_cache([n for _, n in requests], page, kv_heads, d, dv, dtype)
    cu = torch.tensor([0] + [q for q, _ in requests]).cumsum(0).to(torch.int32)
    q = torch.randn(int(cu[-1]), q_heads, d).to(dtype)
    return q, k_cache, v_cache, table, cu, seq_lens


def _check(args, **kw):
    got = ops.extend_attention(*args, **kw)
    want = ref.extend_attention(*args, **kw)
    tol = 1e-5 if args[0].dtype == torch.float32 else 1e-2
    assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("heads", [(8, 2), (4, 1), (4, 4)], ids=lambda h: f"{h[0]}/{h[1]}")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_requests(dtype, heads, causal):
    _check(_inputs(REQUESTS, *heads, 64, 64, dtype), causal=causal)


def test_mla_prefill_head_dims():
    # D = 192 (nope + rope), Dv = 128, as MLA prefill runs
    _check(_inputs([(6, 6), (9, 33)], 4, 4, 192, 128, torch.bfloat16), sm_scale=0.07)


def test_head_dims_off_the_vector_width():
    # 30 tokens x 4 query heads per KV head: prefill-sized tiles; D = 36 and Dv = 24 leave tails past 8 and 16 columns
    _check(_inputs([(30, 34)], 8, 2, 36, 24, torch.bfloat16), sm_scale=0.1)


@pytest.mark.parametrize("window", [1, 8, 1000])
@pytest.mark.parametrize("sinks", [False, True], ids=["nosink", "sinks"])
def test_sinks_and_sliding_window(window, sinks):
    args = _inputs(REQUESTS, 4, 2, 32, 32, torch.float32)
    _check(args, sinks=torch.randn(4) if sinks else None, sliding_window=window)


def test_long_prefix_few_queries():
    # chunked prefill of 4 tokens after 3000 cached ones: the key axis is split and merged
    _check(_inputs([(4, 3004)], 2, 1, 64, 64, torch.float32, page=128))


def test_decode_is_extend_with_one_token_each():
    q, k_cache, v_cache, table, _, seq_lens = _inputs([(1, 7), (1, 70), (1, 1)], 4, 2, 32, 32, torch.float32)
    cu = torch.arange(4, dtype=torch.int32)
    torch.testing.assert_close(
        ops.extend_attention(q, k_cache, v_cache, table, cu, seq_lens),
        ops.decode_attention(q, k_cache, v_cache, table, seq_lens),
    )
