"""Triton kernels (sgl_npu_attention.triton) against reference.py, on CPU tensors through the Triton interpreter
(natively on a GPU with SGL_NPU_TEST_DEVICE=cuda TRITON_INTERPRET=0)."""

import os

# The interpreter must be chosen before triton is imported (conftest.py does the same).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from sgl_npu_attention import reference as ref  # noqa: E402
from sgl_npu_attention.testing import paged_cache as paged  # noqa: E402
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close  # noqa: E402

pytest.importorskip("triton")
from sgl_npu_attention import triton as kernels  # noqa: E402

pytestmark = pytest.mark.usefixtures("on_test_device")


@pytest.mark.parametrize("sinks,window", [(False, -1), (True, -1), (False, 7), (True, 40)])
@pytest.mark.parametrize("heads", [(4, 2), (3, 1), (2, 2)], ids=lambda h: f"{h[0]}/{h[1]}")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_decode_attention(dtype, heads, sinks, window):
    q_heads, kv_heads = heads
    k_cache, v_cache, table, lens = paged([0, 1, 15, 16, 50], 16, kv_heads, 24, 40, dtype)
    q = torch.randn(5, q_heads, 24).to(dtype)
    s = torch.randn(q_heads) if sinks else None
    out = torch.full((5, q_heads, 40), 7.0).to(dtype)
    assert kernels.decode_attention(q, k_cache, v_cache, table, lens, 0.3, s, window, out) is None
    want = ref.decode_attention(q, k_cache, v_cache, table, lens, 0.3, s, window)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(out, want, atol=tol, rtol=tol)


@pytest.mark.parametrize("sinks,window", [(False, -1), (True, -1), (True, 700)])
def test_decode_attention_splits(sinks, window):
    # 80 query heads on one KV head: two blocks of 64 heads (the second partly masked); a block table of 14 pages
    # of 128 keys: several splits per sequence, merged by log-sum-exp with the sink counted once
    from sgl_npu_attention.triton import attention

    k_cache, v_cache, table, lens = paged([1600, 70, 0], 128, 1, 16, 24, torch.float32)
    assert attention._decode_shape(80, 1, 3, table.shape[1] * 128) == (64, 2, 7)
    q = torch.randn(3, 80, 16)
    s = torch.randn(80) if sinks else None
    out = torch.full((3, 80, 24), 7.0)
    kernels.decode_attention(q, k_cache, v_cache, table, lens, 0.3, s, window, out)
    want = ref.decode_attention(q, k_cache, v_cache, table, lens, 0.3, s, window)
    assert_close(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal,sinks,window", [(True, False, -1), (False, True, -1), (True, True, 5)])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_extend_attention(dtype, causal, sinks, window):
    requests = [(1, 1), (4, 4), (6, 23), (0, 3), (2, 40)]
    k_cache, v_cache, table, lens = paged([n for _, n in requests], 16, 2, 24, 40, dtype)
    cu = torch.tensor([0] + [q for q, _ in requests]).cumsum(0).to(torch.int32)
    q = torch.randn(int(cu[-1]), 4, 24).to(dtype)
    s = torch.randn(4) if sinks else None
    out = torch.full((q.shape[0], 4, 40), 7.0).to(dtype)
    kernels.extend_attention(q, k_cache, v_cache, table, cu, lens, 0.3, causal, s, window, out)
    want = ref.extend_attention(q, k_cache, v_cache, table, cu, lens, 0.3, causal, s, window)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(out, want, atol=tol, rtol=tol)


@pytest.mark.parametrize(
    "causal,sinks,window", [(True, False, -1), (False, False, -1), (True, True, 30), (False, True, 100)]
)
def test_extend_attention_long_requests(causal, sinks, window):
    # 150 new tokens span two 128-row programs; an empty request sits between requests; 200 keys give whole key
    # blocks that every row of a program sees (run unmasked) between masked ones (window start, causal diagonal)
    requests = [(150, 170), (0, 9), (65, 65), (3, 200)]
    k_cache, v_cache, table, lens = paged([n for _, n in requests], 16, 1, 16, 16, torch.float32)
    cu = torch.tensor([0] + [q for q, _ in requests]).cumsum(0).to(torch.int32)
    q = torch.randn(int(cu[-1]), 2, 16)
    s = torch.randn(2) if sinks else None
    out = torch.full((q.shape[0], 2, 16), 7.0)
    kernels.extend_attention(q, k_cache, v_cache, table, cu, lens, 0.3, causal, s, window, out)
    want = ref.extend_attention(q, k_cache, v_cache, table, cu, lens, 0.3, causal, s, window)
    assert_close(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "q_heads,dl,dr,page", [(4, 512, 64, 16), (20, 40, 8, 16), (3, 64, 16, 64)], ids=["deepseek", "odd", "page64"]
)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_decode_mla(dtype, q_heads, dl, dr, page):
    lens = [0, 1, page - 1, page, page + 1, 50]
    nope, rope, table, seq_lens = paged(lens, page, 1, dl, dr, dtype)
    q = torch.randn(len(lens), q_heads, dl + dr).to(dtype)
    out = torch.full((len(lens), q_heads, dl), 7.0).to(dtype)
    assert kernels.decode_mla(q, nope, rope, table, seq_lens, 0.1, out) is None
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert_close(out, ref.decode_mla(q, nope, rope, table, seq_lens, 0.1), atol=tol, rtol=tol)


def test_decode_mla_splits():
    # a block table of 25 pages of 128 keys: 13 splits per sequence (at least 256 keys each), merged by
    # log-sum-exp; the short sequence leaves most of its splits empty
    from sgl_npu_attention.triton import mla

    nope, rope, table, seq_lens = paged([2999, 70], 128, 1, 32, 16, torch.float32)
    assert mla._splits(2, 1, table.shape[1] * 128) == 13
    q = torch.randn(2, 2, 48)
    out = torch.empty(2, 2, 32)
    kernels.decode_mla(q, nope, rope, table, seq_lens, 0.2, out)
    assert_close(out, ref.decode_mla(q, nope, rope, table, seq_lens, 0.2), atol=1e-5, rtol=1e-5)


def test_decode_mla_wide_head_blocks(monkeypatch):
    # a batch that fills the device takes 32 heads per program: 40 heads are a full block and a partly masked one
    from sgl_npu_attention.triton import mla

    monkeypatch.setattr(mla, "WIDE_MIN_PROGRAMS", 4)  # 2 sequences x 2 blocks of 32 heads
    nope, rope, table, seq_lens = paged([300, 17], 16, 1, 32, 16, torch.float32)
    q = torch.randn(2, 40, 48)
    out = torch.empty(2, 40, 32)
    kernels.decode_mla(q, nope, rope, table, seq_lens, 0.2, out)
    assert_close(out, ref.decode_mla(q, nope, rope, table, seq_lens, 0.2), atol=1e-5, rtol=1e-5)
