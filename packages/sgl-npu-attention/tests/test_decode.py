"""decode_attention (CPU kernel; with SGL_NPU_TEST_DEVICE=cuda the Triton path) against the reference built from
gathered pages: permuted block tables, ragged lengths around page boundaries, GQA / MQA / MHA, sinks, windows."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import reference as ref
from sgl_npu_attention.testing import paged_cache as paged
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close

pytestmark = pytest.mark.usefixtures("on_test_device")


def _check(q, k_cache, v_cache, table, lens, **kw):
    got = ops.decode_attention(q, k_cache, v_cache, table, lens, **kw)
    want = ref.decode_attention(q, k_cache, v_cache, table, lens, **kw)
    assert_close(
        got, want, atol=1e-2 if q.dtype != torch.float32 else 1e-5, rtol=1e-2 if q.dtype != torch.float32 else 1e-5
    )


@pytest.mark.parametrize("heads", [(32, 8), (16, 1), (8, 8)], ids=lambda h: f"{h[0]}/{h[1]}")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_ragged_lengths(dtype, heads):
    q_heads, kv_heads = heads
    page = 16
    lens = [1, page - 1, page, page + 1, 3 * page + 5]
    k_cache, v_cache, table, seq_lens = paged(lens, page, kv_heads, 64, 64, dtype)
    q = torch.randn(len(lens), q_heads, 64).to(dtype)
    _check(q, k_cache, v_cache, table, seq_lens)


@pytest.mark.parametrize("d,dv", [(128, 128), (256, 256), (576, 512), (64, 32), (36, 24)])
def test_head_dims(d, dv):
    k_cache, v_cache, table, lens = paged([37, 70], 16, 2, d, dv, torch.bfloat16)
    q = torch.randn(2, 4, d).to(torch.bfloat16)
    _check(q, k_cache, v_cache, table, lens, sm_scale=0.05)


def test_long_sequence_splits_and_merges():
    # 4097 keys: five splits of the KV axis merged by log-sum-exp, MQA with 16 query heads
    k_cache, v_cache, table, lens = paged([4097, 5], 128, 1, 64, 64, torch.float32)
    q = torch.randn(2, 16, 64) * 3
    _check(q, k_cache, v_cache, table, lens)


def test_long_sequences_in_a_large_batch():
    # 64 request x KV-head tasks: enough work not to split the key axis, so each task covers all 1500 keys
    k_cache, v_cache, table, lens = paged([1500] * 8, 128, 8, 32, 32, torch.float32)
    q = torch.randn(8, 16, 32)
    _check(q, k_cache, v_cache, table, lens)


@pytest.mark.parametrize("window", [1, 20, 10_000])
@pytest.mark.parametrize("sinks", [False, True], ids=["nosink", "sinks"])
def test_sinks_and_sliding_window(window, sinks):
    k_cache, v_cache, table, lens = paged([50, 3, 1100], 32, 2, 64, 64, torch.float32)
    q = torch.randn(3, 8, 64)
    s = torch.randn(8) * 2 if sinks else None
    _check(q, k_cache, v_cache, table, lens, sinks=s, sliding_window=window)


def test_sink_only_and_empty_sequences():
    k_cache, v_cache, table, lens = paged([0, 4], 16, 1, 32, 32, torch.float32)
    q = torch.randn(2, 2, 32)
    out = ops.decode_attention(q, k_cache, v_cache, table, lens)
    assert (out[0] == 0).all()  # no key: zeros
    sinks = torch.tensor([0.5, -1.0])
    with_sinks = ops.decode_attention(q, k_cache, v_cache, table, lens, sinks=sinks)
    assert (with_sinks[0] == 0).all()
    # a sink only shrinks the weights: out = out_without * sum / (sum + exp(sink))
    assert (with_sinks[1].norm(dim=-1) < out[1].norm(dim=-1)).all()
    _check(q, k_cache, v_cache, table, lens, sinks=sinks)


def test_out_and_strided_q():
    k_cache, v_cache, table, lens = paged([40, 9], 16, 2, 64, 64, torch.float16)
    q = torch.randn(2, 8, 80).to(torch.float16)[..., 8:72]  # heads 80 apart
    out = torch.full((2, 8, 64), 7.0, dtype=torch.float16)
    assert ops.decode_attention(q, k_cache, v_cache, table, lens, out=out) is out
    assert_close(out, ref.decode_attention(q, k_cache, v_cache, table, lens), atol=1e-2, rtol=1e-2)
