"""decode_mla (CPU kernel; with SGL_NPU_TEST_DEVICE=cuda the Triton path) against the fp32 reference built from
gathered pages: permuted block tables, ragged lengths around page boundaries, DeepSeek's 512 + 64 geometry with 16
to 128 heads, page sizes 16 to 256, a long sequence split over the KV axis, an odd geometry (partial tiles)."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import reference as ref
from sgl_npu_attention.testing import paged_cache
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close

pytestmark = pytest.mark.usefixtures("on_test_device")


def _inputs(lens, page, q_heads, dl, dr, dtype):
    # the latent and rope caches share their block ids, as paged_cache's "K" and "V" do
    nope, rope, table, seq_lens = paged_cache(lens, page, 1, dl, dr, dtype)
    return torch.randn(len(lens), q_heads, dl + dr).to(dtype), nope, rope, table, seq_lens


def _check(args, sm_scale=0.07, **kw):
    got = ops.decode_mla(*args, sm_scale, **kw)
    want = ref.decode_mla(*args, sm_scale)
    tol = 1e-5 if args[0].dtype == torch.float32 else 1e-2
    assert_close(got, want, atol=tol, rtol=tol)
    return got


@pytest.mark.parametrize("q_heads", [16, 128])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_ragged_lengths(dtype, q_heads):
    page = 16
    _check(_inputs([1, page - 1, page, page + 1, 3 * page + 5], page, q_heads, 512, 64, dtype))


@pytest.mark.parametrize("page", [32, 64, 256])
def test_page_sizes(page):
    _check(_inputs([1, page - 1, page + 1, 2 * page + 3], page, 8, 512, 64, torch.bfloat16))


def test_long_sequence_splits_and_merges():
    # 4097 keys in a batch of one: five splits of the KV axis merged by log-sum-exp
    _check(_inputs([4097], 128, 16, 512, 64, torch.float32), sm_scale=0.1)


def test_odd_geometry_and_head_count():
    # latent 40 and rope 8: partial 16-column tiles; 5 heads: a partial 6-head tile and padded head columns
    _check(_inputs([0, 3, 33, 70], 16, 5, 40, 8, torch.float32))


def test_empty_sequence_gets_zeros():
    args = _inputs([0, 5], 16, 4, 64, 16, torch.float32)
    out = _check(args)
    assert (out[0] == 0).all() and (out[1] != 0).any()


def test_sharp_softmax():
    # large scores: the running max must rescale earlier blocks (no overflow, no loss). Logits reach ~75 here,
    # where an fp32 ulp is ~8e-6 and exp turns a score's rounding into the same relative error of its weight: a
    # GPU's summation order (tl.dot) lands near 1e-5 against torch's, so this test allows 1e-4.
    args = _inputs([300, 40], 16, 16, 128, 32, torch.float32)
    got = ops.decode_mla(*args, 2.0)
    assert_close(got, ref.decode_mla(*args, 2.0), atol=1e-4, rtol=1e-4)


def test_out_and_strided_q():
    q, nope, rope, table, lens = _inputs([40, 9], 16, 8, 64, 16, torch.float16)
    q = torch.randn(2, 8, 96).to(torch.float16)[..., 8:88]  # heads 96 apart
    out = torch.full((2, 8, 64), 7.0, dtype=torch.float16)
    assert ops.decode_mla(q, nope, rope, table, lens, 0.1, out=out) is out
    assert_close(out, ref.decode_mla(q, nope, rope, table, lens, 0.1), atol=1e-2, rtol=1e-2)


def test_matches_decode_attention_on_a_joined_cache():
    # MLA is MQA with K = [latent | rope] and V = latent: decode_attention on those caches gives the same result
    q, nope, rope, table, lens = _inputs([23, 100], 16, 4, 64, 16, torch.float32)
    k = torch.cat([nope, rope], dim=-1)
    want = ops.decode_attention(q, k, nope, table, lens, sm_scale=0.2)
    torch.testing.assert_close(ops.decode_mla(q, nope, rope, table, lens, 0.2), want, atol=1e-5, rtol=1e-5)
