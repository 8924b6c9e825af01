"""Every op passes torch.library.opcheck (schema, fake impl, functionalization) and traces under
torch.compile(fullgraph=True) as a user calls it."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import reference as ref

N = torch.ops.sgl_npu_attention


def _decode_inputs():
    k_cache, v_cache = torch.randn(5, 16, 2, 32), torch.randn(5, 16, 2, 32)
    table = torch.tensor([[3, 0, 4], [1, 2, 0]], dtype=torch.int32)
    return torch.randn(2, 4, 32), k_cache, v_cache, table, torch.tensor([40, 17], dtype=torch.int32)


@pytest.mark.parametrize("sinks,window", [(False, -1), (True, 8)])
def test_opcheck_decode(sinks, window):
    q, k, v, table, lens = _decode_inputs()
    s = torch.randn(4) if sinks else None
    torch.library.opcheck(N.decode_attention.default, (q, k, v, table, lens, 0.2, s, window, torch.empty(2, 4, 32)))


def test_opcheck_extend():
    q, k, v, table, lens = _decode_inputs()
    cu = torch.tensor([0, 3, 5], dtype=torch.int32)
    q = torch.randn(5, 4, 32)
    args = (q, k, v, table, cu, lens, 0.2, True, torch.randn(4), 16, torch.empty(5, 4, 32))
    torch.library.opcheck(N.extend_attention.default, args)


def _mla_inputs():
    nope, rope = torch.randn(5, 16, 1, 32), torch.randn(5, 16, 1, 8)
    table = torch.tensor([[3, 0, 4], [1, 2, 0]], dtype=torch.int32)
    return torch.randn(2, 4, 40), nope, rope, table, torch.tensor([40, 17], dtype=torch.int32)


def test_opcheck_mla():
    torch.library.opcheck(N.decode_mla.default, (*_mla_inputs(), 0.2, torch.empty(2, 4, 32)))


def _indexer_inputs():
    # small integers: exact scores, so the compiled call must match the reference exactly
    k = torch.randint(-2, 3, (5, 16, 1, 32)).float()
    table = torch.tensor([[3, 0, 4], [1, 2, 0]], dtype=torch.int32)
    cu, lens = torch.tensor([0, 3, 4], dtype=torch.int32), torch.tensor([40, 17], dtype=torch.int32)
    return torch.randint(-2, 3, (4, 8, 32)).float(), k, torch.randint(-2, 3, (4, 8)).float(), table, cu, lens


def test_opcheck_indexer():
    args = (*_indexer_inputs(), 16, torch.empty(4, 16, dtype=torch.int32))
    torch.library.opcheck(N.lightning_indexer.default, args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_opcheck_bmm(dtype):
    a, b = torch.randn(5, 3, 24).to(dtype), torch.randn(3, 24, 20).to(dtype)
    torch.library.opcheck(N.batch_matmul_transpose.default, (a, b, torch.empty(5, 3, 20, dtype=dtype)))


def test_torch_compile_fullgraph():
    args = _decode_inputs()
    torch._dynamo.reset()
    got = torch.compile(lambda *a: ops.decode_attention(*a, sliding_window=20), fullgraph=True)(*args)
    torch.testing.assert_close(got, ref.decode_attention(*args, sliding_window=20), atol=1e-5, rtol=1e-5)
    q, k, v, table, lens = args
    cu, q = torch.tensor([0, 3, 5], dtype=torch.int32), torch.randn(5, 4, 32)
    got = torch.compile(ops.extend_attention, fullgraph=True)(q, k, v, table, cu, lens)
    torch.testing.assert_close(got, ref.extend_attention(q, k, v, table, cu, lens), atol=1e-5, rtol=1e-5)
    args = _mla_inputs()
    got = torch.compile(lambda *a: ops.decode_mla(*a, 0.2), fullgraph=True)(*args)
    torch.testing.assert_close(got, ref.decode_mla(*args, 0.2), atol=1e-5, rtol=1e-5)
    args = _indexer_inputs()
    got = torch.compile(lambda *a: ops.lightning_indexer(*a, sparse_count=10) + 1, fullgraph=True)(*args)
    torch.testing.assert_close(got, ref.lightning_indexer(*args, 10) + 1, atol=0, rtol=0)
    a, b = torch.randn(5, 3, 24), torch.randn(3, 24, 20)
    got = torch.compile(lambda a, b: ops.batch_matmul_transpose(a, b) * 2, fullgraph=True)(a, b)
    torch.testing.assert_close(got, ref.batch_matmul_transpose(a, b) * 2, atol=1e-5, rtol=1e-5)


def test_meta_tensors():
    q, k, v, table, lens = (t.to("meta") for t in _decode_inputs())
    assert ops.decode_attention(q, k, v, table, lens).shape == (2, 4, 32)
    assert ops.decode_mla(*(t.to("meta") for t in _mla_inputs()), 0.1).shape == (2, 4, 32)
    assert ops.lightning_indexer(*(t.to("meta") for t in _indexer_inputs()), sparse_count=9).shape == (4, 9)
    a, b = torch.empty(5, 3, 24, device="meta"), torch.empty(3, 24, 7, device="meta")
    assert ops.batch_matmul_transpose(a, b).shape == (5, 3, 7)


@pytest.mark.parametrize("per_tensor", [False, True])
def test_opcheck_prolog_rows(per_tensor):
    x, gamma, beta = torch.randn(6, 40).bfloat16(), torch.rand(40).bfloat16(), torch.randn(40).bfloat16()
    scale, offset = (torch.tensor([0.03]), torch.tensor([2.0])) if per_tensor else (None, None)
    args = (x, gamma, beta, 1e-6, scale, offset, torch.empty(6, 40, dtype=torch.int8), torch.empty(6))
    torch.library.opcheck(N.mla_quant_rows.default, args)
    latent, k_pe = torch.randn(6, 32), torch.randn(6, 8)
    cos, sin = torch.randn(6, 8), torch.randn(6, 8)
    slots = torch.tensor([5, 0, 17, 9, 30, 2], dtype=torch.int32)
    args = (latent, k_pe, torch.rand(32), cos, sin, slots, 1e-6, torch.zeros(4, 8, 1, 32), torch.zeros(4, 8, 1, 8))
    torch.library.opcheck(N.mla_cache_write.default, args)


def test_torch_compile_prolog():
    from sgl_npu_attention.testing import prolog_inputs

    args = prolog_inputs(5, 64, 32, 32, 8, 16, 2, 8, 3, torch.float32, "per_tensor_quant_asymm")
    expected = ref.mla_preprocess(*[a.clone() for a in args], quant_mode="per_tensor_quant_asymm")
    torch._dynamo.reset()
    fn = torch.compile(lambda *a: ops.mla_preprocess(*a, quant_mode="per_tensor_quant_asymm"), fullgraph=True)
    got = fn(*args)
    for a, e in zip(got, expected, strict=True):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)
    meta = [a.to("meta") for a in args]
    assert ops.mla_preprocess(*meta)[0].shape == (5, 2, 32)


def test_opcheck_int8_matmul():
    codes, weight = torch.randint(-128, 128, (5, 40), dtype=torch.int8), torch.randint(-128, 128, (9, 40),
                                                                                       dtype=torch.int8)  # fmt: skip
    bias = torch.randint(-100, 100, (9,), dtype=torch.int32)
    args = (codes, weight, torch.rand(9), torch.rand(5), bias, torch.empty(5, 9, dtype=torch.bfloat16))
    torch.library.opcheck(N.mla_int8_matmul.default, args)


def test_cache_write_refuses_slots_inside_a_cache():
    # the slots are checked, then read again per row while rows are written: inside the cache, a written row could
    # turn them into out-of-range slots (a crash before this check)
    latent, k_pe, cos, sin = torch.randn(2, 8), torch.randn(2, 4), torch.ones(2, 4), torch.zeros(2, 4)
    kv, kr = torch.zeros(2, 4, 1, 8), torch.zeros(2, 4, 1, 4)
    slots = kv.view(torch.int32).view(-1)[:2].copy_(torch.tensor([0, 1], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="kv_cache must not overlap slotmapping"):
        N.mla_cache_write(latent, k_pe, torch.ones(8), cos, sin, slots, 1e-6, kv, kr)
    from sgl_npu_attention import _meta  # the fakes' and device paths' check

    with pytest.raises(RuntimeError, match="kv_cache must not overlap slotmapping"):
        _meta.check_cache_write(latent, k_pe, torch.ones(8), cos, sin, slots, 1e-6, kv, kr)


def test_prolog_outputs_over_their_inputs_are_refused():
    # an out sharing memory with descale read garbage (max diff 1.7e9 before the check)
    from sgl_npu_attention import _meta

    codes, weight = torch.ones(4, 16, dtype=torch.int8), torch.ones(8, 16, dtype=torch.int8)
    out = torch.zeros(4, 8)
    descale, row_scale = out[0], torch.ones(4)
    for check in (N.mla_int8_matmul, _meta.check_int8_matmul):
        with pytest.raises(RuntimeError, match="out must not overlap descale"):
            check(codes, weight, descale, row_scale, None, out)
    x, codes = torch.randn(4, 16), torch.empty(4, 16, dtype=torch.int8)
    row_scale = codes.view(-1)[:16].view(torch.float32)
    for check in (N.mla_quant_rows, _meta.check_quant_rows):
        with pytest.raises(RuntimeError, match="codes must not overlap row_scale"):
            check(x, None, None, 1e-6, None, None, codes, row_scale)
