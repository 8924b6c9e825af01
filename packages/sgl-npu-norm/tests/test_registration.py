"""Every op passes torch.library.opcheck (schema, fake impl, functionalization) and traces under
torch.compile(fullgraph=True) as a user calls it."""

import pytest
import sgl_npu_norm as ops
import torch
from sgl_npu_norm import reference as ref

N = torch.ops.sgl_npu_norm


def _rope_only(x, out, *second, neox=False):
    """head_norm_rope's arguments for RoPE alone over 16 dims of x's heads into out (in place where x is None), and
    ``second``: an (x2, out2) group."""
    return (x, None, None, 0.0, False, False, None, torch.randn(3, 16), torch.randn(3, 16), None, 16, neox, False, out,
            *second)  # fmt: skip


def _across_heads(w, rstd, whole_width):
    """split_qkv_norm_rope's arguments for one norm over each group's heads (2 q heads, 1 kv head of 32)."""
    qkv = torch.randn(3, 4 * 32, dtype=w.dtype)
    tables = (torch.randn(3, 32), torch.randn(3, 32), None, 32, True, True)
    outs = [torch.empty(3, n, dtype=w.dtype) for n in (64, 32, 32)]
    return (qkv, 32, 2, 1, False, w, w[:32], None, None, 1e-6, False, True, rstd, whole_width, *tables, *outs, None)


def _samples():
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    w = torch.randn(64, dtype=torch.bfloat16)
    b = torch.randn(64, dtype=torch.bfloat16)
    qs, qo = torch.rand(64) * 20, torch.randn(64)
    res = torch.randn_like(x)
    out, q8 = torch.empty_like(x), torch.empty(3, 64, dtype=torch.int8)
    g = torch.randn(3, 128, dtype=torch.float16)
    return {
        "rmsnorm": (N.rmsnorm.default, (x, w, None, 1e-6, False, None, None, out)),
        "rmsnorm_quant": (N.rmsnorm.default, (x, w, b, 1e-6, True, qs, qo, q8)),
        "add_rmsnorm": (N.add_rmsnorm.default, (x, res, w, b, 1e-6, False, None, None, out, torch.empty_like(x))),
        "fused_add_rmsnorm": (N.fused_add_rmsnorm.default, (x.clone(), res.clone(), w, 1e-6, True)),
        "split_sum_squares": (N.split_sum_squares.default, (x, 40, 20, torch.empty(3, 2))),
        "mrope_tables": (N.mrope_tables.default, (torch.randn(3, 3, 40), 8, 4, 4, True, torch.empty(3, 32))),
        "silu_and_mul": (N.silu_and_mul.default, (g, torch.empty(3, 64, dtype=g.dtype))),
        "swiglu_oai": (N.swiglu_oai.default, (g, 1.702, 7.0, torch.empty(3, 64, dtype=g.dtype))),
        "swiglu_quant": (
            N.swiglu_quant.default,
            (
                g,
                torch.tensor([1, 1], dtype=torch.int32),
                1,
                True,
                7.0,
                torch.empty(3, 64, dtype=torch.int8),
                torch.empty(3),
            ),
        ),
        # fmt: off
        "head_norm_rope": (
            N.head_norm_rope.default,
            (
                x.view(3, 2, 32),
                w[:32],
                b[:32],
                1e-6,
                True,
                True,
                None,
                torch.randn(5, 16),
                torch.randn(5, 16),
                torch.tensor([4, 0, 2]),
                32,
                True,
                False,
                torch.empty(3, 2, 32, dtype=x.dtype),
            ),
        ),
        "split_qkv_norm_rope": (  # q heads with a gate, per-head norm, NeoX over half of each head
            N.split_qkv_norm_rope.default,
            (
                torch.randn(3, 2 * 32 + 32 + 32, dtype=x.dtype),
                32,
                1,
                1,
                True,
                w[:32],
                w[:32],
                None,
                b[:32],
                1e-6,
                True,
                True,
                None,
                False,
                torch.randn(3, 32),
                torch.randn(3, 32),
                None,
                16,
                True,
                True,
                *[torch.empty(3, 32, dtype=x.dtype) for _ in range(4)],
            ),
        ),
        # weights across the heads, with a given rstd or the statistics taken in the op
        "split_qkv_norm_rope_tp": (N.split_qkv_norm_rope.default, _across_heads(w, torch.rand(3, 2) + 0.5, False)),
        "split_qkv_norm_rope_whole_width": (N.split_qkv_norm_rope.default, _across_heads(w, None, True)),
        "head_norm_rope_in_place": (N.head_norm_rope.default, _rope_only(None, x.clone().view(3, 2, 32))),
        # a query's and a key's heads in one call: the second group in place, then from x2 into out2
        "head_norm_rope_two_groups_in_place": (
            N.head_norm_rope.default,
            _rope_only(None, x.clone().view(3, 2, 32), None, torch.randn(3, 1, 32, dtype=x.dtype), neox=True),
        ),
        "head_norm_rope_two_groups": (
            N.head_norm_rope.default,
            _rope_only(
                x.view(3, 2, 32),
                torch.empty(3, 2, 32, dtype=x.dtype),
                torch.randn(3, 1, 32, dtype=x.dtype),
                torch.empty(3, 1, 32, dtype=x.dtype),
            ),
        ),
        # fmt: on
    }


@pytest.mark.parametrize("case", list(_samples()))
def test_opcheck(case):
    op, args = _samples()[case]
    torch.library.opcheck(op, args)


def _user_calls(x, w, res, g):
    a = ops.rmsnorm(x, w)
    b = ops.gemma_rmsnorm(x, w)
    c, added = ops.add_rmsnorm_bias(x, res, w, w)
    d = ops.rmsnorm_bias(x, w, w, 1e-6, w.float(), None)
    x2, res2 = x.clone(), res.clone()
    ops.fused_add_rmsnorm(x2, res2, w)
    e = ops.silu_and_mul(g)
    f = ops.swiglu_oai(g)
    q, s = ops.swiglu_quant(g, torch.tensor([2], dtype=torch.int64))
    return a, b, c, added, d, x2, res2, e, f, q, s


def _reference_calls(x, w, res, g):
    c, added = ref.add_rmsnorm_bias(x, res, w, w)
    x2, res2 = ref.fused_add_rmsnorm(x, res, w)
    q, s = ref.swiglu_quant(g, torch.tensor([2]))
    return (
        ref.rmsnorm(x, w),
        ref.gemma_rmsnorm(x, w),
        c,
        added,
        ref.rmsnorm_bias(x, w, w, 1e-6, w.float()),
        x2,
        res2,
        ref.silu_and_mul(g),
        ref.swiglu_oai(g),
        q,
        s,
    )


def test_torch_compile_fullgraph():
    x, w, res = torch.randn(4, 64), torch.randn(64), torch.randn(4, 64)
    g = torch.randn(4, 128)
    torch._dynamo.reset()
    compiled = torch.compile(_user_calls, fullgraph=True)
    got = compiled(x, w, res, g)
    for name, a, e in zip("a b c added d x2 res2 e f q s".split(), got, _reference_calls(x, w, res, g), strict=True):
        if e.dtype == torch.int8:
            assert (a.int() - e.int()).abs().max() <= 1, name
        else:
            torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=name)


def test_ops_run_on_meta_tensors():
    x = torch.empty(5, 7, 32, device="meta", dtype=torch.bfloat16)
    w = torch.empty(32, device="meta", dtype=torch.bfloat16)
    assert ops.rmsnorm(x, w).shape == (5, 7, 32)
    q, s = ops.swiglu_quant(x)
    assert q.shape == (5, 7, 16) and s.shape == (5, 7)


def _rope_user_calls(qkv, cos, sin, cache, positions, w):
    a = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 128, 64, 32, 1e-6, w, w)
    b = ops.split_qkv_rmsnorm_rope_pos_cache(qkv, positions, cache, 128, 64, 32, 1e-6, w, w, is_neox_style=False)
    query, key = qkv[:, :128].clone(), qkv[:, 128:192].clone()
    ops.apply_rope_with_cos_sin_cache_inplace(positions, query, key, 32, cache)
    c = ops.split_qkv_rmsnorm_mrope(qkv, w, w, torch.stack([cache[:4]] * 3), 4, 2, 32, 1e-6, [8, 4, 4], True)[:3]
    d = ops.fused_rope_qk_mqa(
        qkv[:, :128].unflatten(-1, (4, 32)), qkv[:, 128:192].unflatten(-1, (2, 32)), cache[:4], 32
    )
    e = ops.split_qkv_tp_rmsnorm_rope(qkv, cos, sin, 128, 64, 32, 1e-6, w.repeat(4), w.repeat(2), 32)
    return (*a, *b, query, key, *c, *d, *e)


def _rope_reference_calls(qkv, cos, sin, cache, positions, w):
    a = ref.split_qkv_rmsnorm_rope(qkv, sin, cos, 128, 64, 32, 1e-6, w, w)
    b = ref.split_qkv_rmsnorm_rope_pos_cache(qkv, positions, cache, 128, 64, 32, 1e-6, w, w, is_neox_style=False)
    rotated = ref.apply_rope_with_cos_sin_cache(positions, qkv[:, :128], qkv[:, 128:192], 32, cache)
    c = ref.split_qkv_rmsnorm_mrope(qkv, w, w, torch.stack([cache[:4]] * 3), 4, 2, 32, 1e-6, [8, 4, 4], True)[:3]
    d = ref.fused_rope_qk_mqa(
        qkv[:, :128].unflatten(-1, (4, 32)), qkv[:, 128:192].unflatten(-1, (2, 32)), cache[:4], 32
    )
    e = ref.split_qkv_tp_rmsnorm_rope(qkv, cos, sin, 128, 64, 32, 1e-6, w.repeat(4), w.repeat(2), 32)
    return (*a, *b, *rotated, *c, *d, *e)


def test_rope_ops_compile_fullgraph():
    qkv, cos, sin = torch.randn(4, 256), torch.randn(4, 32), torch.randn(4, 32)
    cache, positions, w = torch.randn(10, 32), torch.tensor([9, 0, 3, 3]), torch.randn(32)
    torch._dynamo.reset()
    got = torch.compile(_rope_user_calls, fullgraph=True)(qkv, cos, sin, cache, positions, w)
    for i, (a, e) in enumerate(zip(got, _rope_reference_calls(qkv, cos, sin, cache, positions, w), strict=True)):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5, msg=f"output {i}")
