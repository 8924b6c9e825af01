"""CPU kernels of the gated activations against reference.py."""

import pytest
import sgl_npu_norm as ops
import torch
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close, assert_codes_close, empty_at
from sgl_npu_norm import reference as ref

SHAPES = [(1, 16), (3, 200), (2, 3, 514), (2, 2 * 59), (4, 2 * 3584)]  # 59 = 32 + 16 + 8 + 3: every step a row takes


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_silu_and_mul(shape, dtype):
    x = torch.randn(shape, dtype=dtype) * 4
    out = ops.silu_and_mul(x)
    assert out.shape == (*shape[:-1], shape[-1] // 2)
    assert_close(out, ref.silu_and_mul(x))
    again = torch.empty_like(out)
    assert ops.silu_and_mul(x, out=again) is again and torch.equal(again, out)


@pytest.mark.parametrize("op", ["silu_and_mul", "swiglu_oai"])
@pytest.mark.parametrize(("dtype", "bits", "share"), [(torch.bfloat16, 8, 0.02), (torch.float16, 11, 0.005)], ids=str)
def test_half_precision_results_are_within_one_rounding_step(op, dtype, bits, share):
    # bf16 and fp16 outputs take an exp computed to their precision (vec.h's Accuracy): each value lands on the
    # reference's rounding or the value next to it, and only a small share moves (~0.45 % for bf16, ~0.12 % for fp16).
    x = torch.randn(64, 2 * 2048).to(dtype) * 4
    got, want = getattr(ops, op)(x).float(), getattr(ref, op)(x).float()
    step = (torch.frexp(want)[1] - bits).float().exp2().clamp_min(2.0**-24)  # one step at want's binade
    assert ((got - want).abs() <= step).all()
    assert (got != want).float().mean() < share


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_swiglu_oai(shape, dtype):
    x = torch.randn(shape, dtype=dtype) * 5  # beyond the limit on both sides
    assert_close(ops.swiglu_oai(x), ref.swiglu_oai(x))
    assert_close(ops.swiglu_oai(x, alpha=1.0, limit=2.5), ref.swiglu_oai(x, 1.0, 2.5))


def _check_quant(x, q, scale, want_q, want_scale):
    assert q.dtype == torch.int8 and scale.dtype == torch.float32
    assert scale.shape == x.shape[:-1]
    assert_close(scale, want_scale, atol=1e-7, rtol=5e-6, name="scale")
    assert_codes_close(q, want_q, max_mismatch=0.005, name="q")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("do_limit", [False, True])
def test_swiglu_quant(shape, dtype, do_limit):
    x = torch.randn(shape, dtype=dtype) * 4
    q, scale = ops.swiglu_quant(x, do_limit=do_limit, limit=3.0)
    _check_quant(x, q, scale, *ref.swiglu_quant(x, do_limit=do_limit, limit=3.0))


@pytest.mark.parametrize("offset", [0, 16], ids=["aligned", "16-byte"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_outputs_over_the_streaming_threshold(dtype, offset):
    # outputs of 8 MB and more are written around the caches (should_stream), a 64-byte line at a time where aligned
    # so ("16-byte": out= starts 16 bytes into a line, so 16 bytes at a time): the same values
    x = torch.randn(600, 2 * 7168).to(dtype) * 4
    out = empty_at((600, 7168), dtype, offset)
    assert out.data_ptr() % 64 == offset
    assert_close(ops.silu_and_mul(x, out=out), ref.silu_and_mul(x))
    assert_close(ops.swiglu_oai(x), ref.swiglu_oai(x))


@pytest.mark.parametrize("offset", [0, 16, 8], ids=["aligned", "16-byte", "8-byte"])
def test_swiglu_quant_codes_over_the_streaming_threshold(offset):
    # 8 MB of codes and more are written around the caches where 16-byte aligned ("8-byte": q starts 8 bytes into a
    # line, so cached stores): the same codes. The width is a multiple of 16 (as streaming needs of the row stride) but
    # not of 32, so each row ends with a 16-wide store.
    rows, d = 1200, 7184
    x = torch.randn(rows, 2 * d, dtype=torch.bfloat16) * 4
    codes = empty_at((rows, d), torch.int8, offset)
    assert codes.data_ptr() % 64 == offset
    q, scale = ops.swiglu_quant(x, out=(codes, torch.empty(rows)))
    assert q.data_ptr() == codes.data_ptr()
    _check_quant(x, q, scale, *ref.swiglu_quant(x))


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("group_list_type", [0, 1])
def test_swiglu_quant_group_list(index_dtype, group_list_type):
    counts = torch.tensor([0, 32, 0, 0, 10, 0, 0, 0, 100, 0, 0, 5, 5, 5, 0, 0])
    group_list = counts if group_list_type == 1 else counts.cumsum(0)
    x = torch.randn(200, 384, dtype=torch.bfloat16)
    q = torch.full((200, 192), 9, dtype=torch.int8)
    scale = torch.full((200,), 9.0)
    ops.swiglu_quant(x, group_list.to(index_dtype), group_list_type, out=(q, scale))
    want_q, want_scale = ref.swiglu_quant(x, group_list, group_list_type)
    _check_quant(x, q, scale, want_q, want_scale)
    assert (q[157:] == 0).all() and (scale[157:] == 0).all()
    assert (scale[:157] > 0).all()


def test_swiglu_quant_zero_rows_and_zero_input():
    q, scale = ops.swiglu_quant(torch.empty(0, 8))
    assert q.shape == (0, 4) and scale.shape == (0,)
    q, scale = ops.swiglu_quant(torch.zeros(2, 8))
    assert (q == 0).all() and (scale == 0).all()


def _with_nans(rows, d, dtype, nan_cols):
    """x [rows, 2d] * 4 with NaN at (row r, column c) for each r, c in nan_cols (gate or up columns, vector
    blocks and the scalar tail alike)."""
    x = torch.randn(rows, 2 * d, dtype=dtype) * 4
    for r, c in nan_cols:
        x[r, c] = float("nan")
    return x


NAN_COLS = [(0, 5), (1, 203 + 7), (2, 200), (3, 2 * 203 - 1)]  # gate in a vector, up in one, gate / up in the tail


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nan_inputs_give_nan_as_the_reference(dtype):
    x = _with_nans(5, 203, dtype, NAN_COLS)
    for got, want in ((ops.swiglu_oai(x), ref.swiglu_oai(x)), (ops.silu_and_mul(x), ref.silu_and_mul(x))):
        assert torch.equal(got.isnan(), want.isnan())
        assert_close(got.nan_to_num(0.0), want.nan_to_num(0.0))
    for do_limit in (False, True):  # a NaN anywhere in a row: scale NaN and codes 0, as the reference
        q, scale = ops.swiglu_quant(x, do_limit=do_limit, limit=3.0)
        want_q, want_scale = ref.swiglu_quant(x, do_limit=do_limit, limit=3.0)
        assert scale[:4].isnan().all() and (q[:4] == 0).all() and torch.equal(want_q[:4], q[:4])
        _check_quant(x[4:], q[4:], scale[4:], want_q[4:], want_scale[4:])


def test_swiglu_oai_refuses_a_non_finite_alpha():
    for alpha in (float("nan"), float("inf")):
        with pytest.raises(RuntimeError, match="alpha must be finite"):
            ops.swiglu_oai(torch.randn(2, 32), alpha=alpha)


def test_outputs_inside_the_input_are_refused():
    buf = torch.randn(4 * 64 + 64)
    x = buf[: 4 * 64].view(4, 64)
    with pytest.raises(RuntimeError, match="out must not overlap x"):
        ops.silu_and_mul(x, out=buf[64:192].view(4, 32))
    with pytest.raises(RuntimeError, match="scale must not overlap x"):
        ops.swiglu_quant(x, out=(torch.empty(4, 32, dtype=torch.int8), buf[100:104]))
    codes = torch.empty(4 * 32 + 12, dtype=torch.int8)  # scale: its last 16 bytes, 4 of them q's
    with pytest.raises(RuntimeError, match="scale must not overlap q"):
        ops.swiglu_quant(x, out=(codes[:128].view(4, 32), codes[124:].view(torch.float32)))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_infinite_and_huge_gates_give_what_the_reference_gives(dtype):
    # silu(-inf) = -inf * sigmoid(-inf) = NaN in torch, and a huge negative gate gives -0; exp saturating at ~2.4e38
    # had given -inf and -0.42 (x / (1 + 2.4e38) at x = -1e38). Every step of a row alike (d = 6 * 32 + 16 + 8 + 3).
    big = torch.finfo(dtype).max
    x = torch.randn(4, 2 * 219, dtype=dtype)
    for c in (0, 9, 40, 200, 212, 218):  # gates in blocks of 32, the 16- and 8-value steps and the scalar tail
        x[0, c], x[1, c], x[2, c] = float("-inf"), float("inf"), -big
        x[3, c] = -100.0
    x[1, 219:] = x[1, 219:].abs() + 1  # +inf gate times a positive up: +inf
    for got, want in ((ops.silu_and_mul(x), ref.silu_and_mul(x)), (ops.swiglu_oai(x), ref.swiglu_oai(x))):
        assert torch.equal(got.isnan(), want.isnan())
        assert torch.equal(got.isinf(), want.isinf())
        assert_close(got.nan_to_num(0.0, 0.0, 0.0), want.nan_to_num(0.0, 0.0, 0.0))
    rows = torch.tensor([0, 2, 3])  # -inf gates make the row's scale NaN and its codes 0; huge negative ones ~0
    q, scale = ops.swiglu_quant(x[rows])
    want_q, want_scale = ref.swiglu_quant(x[rows])
    assert scale[0].isnan() and want_scale[0].isnan() and (q[0] == 0).all()
    _check_quant(x[rows][1:], q[1:], scale[1:], want_q[1:], want_scale[1:])
