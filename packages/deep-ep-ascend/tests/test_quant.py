"""deep_ep.quant: the int8 (per token) and fp8 e4m3 (per 128 channels) recipes dispatch can apply."""

import pytest
import torch
from deep_ep import reference as ref
from deep_ep.quant import calc_diff, dequantize, quantize


@pytest.mark.parametrize("mode,threshold", [("int8", 3e-3), ("fp8_e4m3", 2e-3)])
def test_round_trip_error_within_deepep_thresholds(mode, threshold):
    x = torch.randn(64, 1024).to(torch.bfloat16) * torch.rand(64, 1) * 10  # rows of very different ranges
    data, scales = quantize(x, mode)
    assert calc_diff(dequantize(data, scales), x.float()) < threshold
    if mode == "int8":
        assert data.dtype == torch.int8 and scales.shape == (64,) and data.abs().max() <= 127
    else:
        assert data.dtype == torch.float8_e4m3fn and scales.shape == (64, 8)


def test_power_of_two_scales():
    _, scales = quantize(torch.randn(4, 256), "fp8_e4m3", round_scale=True)
    assert torch.equal(torch.exp2(torch.log2(scales).round()), scales)


def test_passthrough_and_errors():
    x = torch.randn(2, 128)
    assert quantize(x, None) is x and quantize(x, "bf16") is x
    with pytest.raises(RuntimeError, match="quant_mode"):
        quantize(x, "int4")
    with pytest.raises(RuntimeError, match="divisible by 128"):
        quantize(torch.randn(2, 100), "fp8_e4m3")
    assert calc_diff(x, x) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(0, 64), (3, 5), (37, 7168)])
def test_int8_kernel_matches_reference_bit_for_bit(dtype, shape):
    x = (torch.randn(shape) * torch.rand(shape[0], 1) * 10).to(dtype)
    if shape[0] > 1:
        x[1] = 0  # an all-zero token
    q, s = quantize(x, "int8")
    want_q, want_s = ref.quantize_int8(x)
    assert torch.equal(q, want_q) and torch.equal(s, want_s)


def test_int8_kernel_rejects_malformed_outputs():
    x = torch.randn(4, 16)
    with pytest.raises(RuntimeError, match="q must"):
        torch.ops.deep_ep.quantize_int8(x, torch.empty(4, 16, dtype=torch.uint8), torch.empty(4))
    with pytest.raises(RuntimeError, match="scales must have shape"):
        torch.ops.deep_ep.quantize_int8(x, torch.empty(4, 16, dtype=torch.int8), torch.empty(3))
