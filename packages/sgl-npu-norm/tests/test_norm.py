"""CPU kernels of the RMSNorm family against reference.py."""

import pytest
import sgl_npu_norm as ops
import torch
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close, assert_codes_close
from sgl_npu_norm import reference as ref

SHAPES = [(1, 8), (3, 100), (2, 3, 257), (5, 4096), (2, 7168)]


def _inputs(shape, dtype, scale=1.0):
    x = torch.randn(shape, dtype=dtype) * scale
    w = torch.randn(shape[-1], dtype=dtype)
    return x, w


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rmsnorm(shape, dtype):
    x, w = _inputs(shape, dtype)
    assert_close(ops.rmsnorm(x, w, 1e-5), ref.rmsnorm(x, w, 1e-5))
    assert_close(ops.gemma_rmsnorm(x, w), ref.gemma_rmsnorm(x, w))


def test_rmsnorm_output_over_the_streaming_threshold():
    # an output of 8 MB and more is written around the caches (should_stream): the same values
    x, w = _inputs((600, 7168), torch.bfloat16)
    assert_close(ops.rmsnorm(x, w), ref.rmsnorm(x, w))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_rmsnorm_fp32_weight_out_and_strided_rows(dtype):
    base = torch.randn(6, 300, dtype=dtype)
    x = base[:, 22:278]  # rows 300 elements apart
    w = torch.randn(256)
    out = torch.full((6, 256), 7.0, dtype=dtype)
    assert ops.rmsnorm(x, w, out=out) is out
    assert_close(out, ref.rmsnorm(x, w))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_weight_and_bias_in_any_dtype_give_the_same_outputs(dtype):
    # Parameters of x's own dtype are read as they are, any other mix through fp32 copies: the same arithmetic.
    # 4108 columns: whole blocks of 16, then the 8-wide and the one-by-one tails.
    x, w = _inputs((3, 4108), dtype)
    bias, residual, scale = torch.randn(4108, dtype=dtype), torch.randn(3, 4108, dtype=dtype), torch.rand(4108) * 60
    want = ops.rmsnorm_bias(x, w, bias)
    want_q = ops.rmsnorm_bias(x, w, bias, 1e-6, scale)
    want_out, want_added = ops.add_rmsnorm_bias(x, residual, w, bias)
    assert_close(want, ref.rmsnorm_bias(x, w, bias))
    for w2, b2 in [(w.float(), bias.float()), (w, bias.float()), (w.float(), bias)]:
        assert torch.equal(ops.rmsnorm_bias(x, w2, b2), want)
        assert torch.equal(ops.rmsnorm_bias(x, w2, b2, 1e-6, scale), want_q)
        out, added = ops.add_rmsnorm_bias(x, residual, w2, b2)
        assert torch.equal(out, want_out) and torch.equal(added, want_added)
    assert torch.equal(ops.rmsnorm(x, w.float()), ops.rmsnorm(x, w))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("gemma", [False, True])
def test_fused_add_rmsnorm_in_place(shape, dtype, gemma):
    x, w = _inputs(shape, dtype)
    residual = torch.randn(shape, dtype=dtype)
    want_x, want_residual = ref.fused_add_rmsnorm(x, residual, w, gemma=gemma)
    fn = ops.gemma_fused_add_rmsnorm if gemma else ops.fused_add_rmsnorm
    assert fn(x, residual, w) is None
    assert_close(residual, want_residual, atol=0, rtol=0, name="residual")  # the sum is rounded to the dtype
    assert_close(x, want_x)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 8), (3, 6144), (2, 2, 100)], ids=str)
@pytest.mark.parametrize("with_bias", [False, True])
def test_add_rmsnorm_bias(shape, dtype, with_bias):
    x, w = _inputs(shape, dtype)
    residual = torch.randn(shape, dtype=dtype)
    bias = torch.randn(shape[-1], dtype=dtype) if with_bias else None
    out, added = ops.add_rmsnorm_bias(x, residual, w, bias, 1e-6)
    want_out, want_added = ref.add_rmsnorm_bias(x, residual, w, bias, 1e-6)
    assert_close(added, want_added, atol=0, rtol=0, name="added")
    assert_close(out, want_out)


def test_add_rmsnorm_bias_takes_its_outputs_as_a_pair():
    x, w = _inputs((3, 64), torch.bfloat16)
    residual = torch.randn(3, 64, dtype=torch.bfloat16)
    pair = (torch.empty(3, 64, dtype=torch.bfloat16), torch.empty(3, 64, dtype=torch.bfloat16))
    out, added = ops.add_rmsnorm_bias(x, residual, w, out=pair)
    assert out is pair[0] and added is pair[1]
    want_out, want_added = ref.add_rmsnorm_bias(x, residual, w)
    assert_close(out, want_out)
    assert_close(added, want_added, atol=0, rtol=0)
    with pytest.raises(RuntimeError, match="out must be the pair"):
        ops.add_rmsnorm_bias(x, residual, w, out=pair[:1])
    with pytest.raises(RuntimeError, match="out must be the pair"):
        ops.add_rmsnorm_bias(x, residual, w, out=pair, added=pair[1])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("with_offset", [False, True])
def test_quantized_outputs(dtype, with_offset):
    x, w = _inputs((4, 3, 520), dtype)
    bias = torch.randn(520, dtype=dtype)
    scale = torch.rand(520) * 60  # large enough that some values saturate
    offset = torch.randn(520) * 3 if with_offset else None
    q = ops.rmsnorm_bias(x, w, bias, 1e-6, scale, offset)
    want = ref.rmsnorm_bias(x, w, bias, 1e-6, scale, offset)
    assert_codes_close(q, want)
    assert (want == 127).any() and (want == -128).any()
    residual = torch.randn_like(x)
    q, added = ops.add_rmsnorm_bias(x, residual, w, bias, 1e-6, scale.to(dtype), offset)
    want_q, want_added = ref.add_rmsnorm_bias(x, residual, w, bias, 1e-6, scale.to(dtype), offset)
    assert_codes_close(q, want_q)
    assert_close(added, want_added, atol=0, rtol=0)


def test_zero_rows_and_special_values():
    x = torch.empty(0, 64, dtype=torch.bfloat16)
    assert ops.rmsnorm(x, torch.ones(64, dtype=torch.bfloat16)).shape == (0, 64)
    x = torch.empty(4, 0, 64, dtype=torch.bfloat16)  # strides (64, 64, 1): no row, whatever the leading strides
    assert ops.rmsnorm(x, torch.ones(64, dtype=torch.bfloat16)).shape == (4, 0, 64)
    assert ops.silu_and_mul(x).shape == (4, 0, 32)
    x = torch.zeros(2, 64)
    x[1, 3] = float("inf")
    out = ops.rmsnorm(x, torch.ones(64))
    assert torch.equal(out[0], torch.zeros(64))  # eps keeps an all-zero row finite
    assert out[1].isnan().any()  # inf / inf, as in the reference
    assert ref.rmsnorm(x, torch.ones(64))[1].isnan().any()


def test_nan_payloads_stay_nan_in_bf16_outputs():
    # NaN weights with payloads that a bare round-to-nearest-even would carry into an infinity or a zero
    x = torch.randn(3, 64).to(torch.bfloat16)
    w = torch.ones(64)
    bits = w.view(torch.int32)
    bits[5], bits[17], bits[40] = 0x7FFFFFFF, 0x7F800001, -1  # -1: 0xFFFFFFFF
    nan = torch.zeros(64, dtype=torch.bool)
    nan[[5, 17, 40]] = True
    assert torch.equal(ops.rmsnorm(x, w).isnan(), nan.expand(3, 64))


def test_denormal_bf16_values_are_kept():
    # AVX-512's one-instruction bf16 conversion flushes denormals to zero; the kernels must round them as torch does.
    # Hidden 75 = 4 blocks of 16, one of 8 and a scalar tail, with a denormal in each part.
    tiny = [3, 20, 66, 73]
    x = torch.ones(3, 75, dtype=torch.bfloat16)
    w = torch.ones(75)
    w[tiny] = 2.0**-130
    out = ops.rmsnorm(x, w)
    assert torch.equal(out, ref.rmsnorm(x, w))
    assert (out[:, tiny] != 0).all()
    residual = torch.zeros(3, 75, dtype=torch.bfloat16)
    x[:, tiny] = 2.0**-130
    ops.fused_add_rmsnorm(x.clone(), residual, w)
    assert torch.equal(residual, x)


def test_multithreaded_rows_match_single_row_calls():
    x, w = _inputs((256, 2048), torch.bfloat16)
    batched = ops.rmsnorm(x, w)
    for r in (0, 100, 255):
        assert torch.equal(batched[r], ops.rmsnorm(x[r : r + 1], w)[0])


def test_outputs_that_partly_overlap_their_inputs_are_refused():
    # a row written before the next row is read would feed normalized data back in; in place is fine
    buf, w = torch.randn(9, 128, dtype=torch.bfloat16), torch.randn(128, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="residual must not overlap x"):
        ops.fused_add_rmsnorm(buf[1:], buf[:-1], w)
    with pytest.raises(RuntimeError, match="out must not overlap x"):
        ops.rmsnorm(buf[:-1], w, out=buf[1:])
    x, r = torch.randn(4, 128, dtype=torch.bfloat16), torch.randn(4, 128, dtype=torch.bfloat16)
    t = torch.empty(4, 128, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="out must not overlap added"):
        ops.add_rmsnorm_bias(x, r, w, out=(t, t))
    want_out, want_added = ref.add_rmsnorm_bias(x, r, w)
    xc, rc = x.clone(), r.clone()
    out, added = ops.add_rmsnorm_bias(xc, rc, w, out=xc, added=rc)  # in place on both inputs
    assert out is xc and added is rc
    assert_close(out, want_out)
    assert_close(added, want_added, atol=0, rtol=0)
    assert_close(ops.rmsnorm(x, w, out=x.clone()), ref.rmsnorm(x, w))


def test_nan_quant_scale_gives_the_same_code_in_every_column():
    # 20 columns: a block of 16 and a one-by-one tail; a NaN product is -128 in both
    x, w = _inputs((2, 20), torch.bfloat16)
    q = ops.rmsnorm_bias(x, w, None, 1e-6, torch.full((20,), float("nan")))
    assert (q == -128).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_split_sum_squares(dtype):
    """The local sums of the tensor-parallel norm: every column group width (blocks of 32, 8 and single values),
    strided rows, rows split over threads."""
    op = torch.ops.sgl_npu_norm.split_sum_squares
    for rows, width0, width1, extra in [(3, 4096, 1024, 1024), (5, 37, 19, 3), (2, 1, 1, 0), (0, 8, 8, 0)]:
        x = torch.randn(rows, width0 + width1 + extra + 5, dtype=dtype)[:, 5:]  # rows of another stride
        out = torch.empty(rows, 2)
        op(x, width0, width1, out)
        assert_close(out, ref.split_sum_squares(x, width0, width1), rtol=1e-5, atol=1e-5)
    x = torch.randn(4096, 64, dtype=dtype)  # enough rows for several threads
    out = torch.empty(4096, 2)
    op(x, 40, 24, out)
    assert_close(out, ref.split_sum_squares(x, 40, 24), rtol=1e-5, atol=1e-5)
    inside_x = x.view(-1)[: out.nbytes // x.element_size()].view(torch.float32).view(out.shape)
    with pytest.raises(RuntimeError, match="overlap"):
        op(x, 40, 24, inside_x)
