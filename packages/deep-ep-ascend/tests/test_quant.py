"""deep_ep.quant: the recipes dispatch can apply: int8 per token, fp8 e4m3 per 128 channels or per token, and the
MX formats (fp8 e4m3 / e5m2, fp4 e2m1 with an e8m0 scale per 32 channels)."""

import pytest
import torch
from deep_ep import reference as ref
from deep_ep.quant import FP4_VALUES, calc_diff, dequantize, quantize, unpack_fp4

LAYOUTS = {  # mode: (data dtype, data columns of 1024, scales dtype, scales shape of 64 x 1024)
    "int8": (torch.int8, 1024, torch.float32, (64,)),
    "fp8_e4m3": (torch.float8_e4m3fn, 1024, torch.float32, (64, 8)),
    "pertoken_fp8_e4m3": (torch.float8_e4m3fn, 1024, torch.float32, (64,)),
    "mx_fp8_e4m3": (torch.float8_e4m3fn, 1024, torch.float8_e8m0fnu, (64, 32)),
    "mx_fp8_e5m2": (torch.float8_e5m2, 1024, torch.float8_e8m0fnu, (64, 32)),
    "mx_fp4_e2m1": (torch.float4_e2m1fn_x2, 512, torch.float8_e8m0fnu, (64, 32)),
}


@pytest.mark.parametrize(
    "mode,threshold",
    [("int8", 3e-3), ("fp8_e4m3", 2e-3), ("pertoken_fp8_e4m3", 2e-3), ("mx_fp8_e4m3", 2e-3), ("mx_fp8_e5m2", 6e-3),
     ("mx_fp4_e2m1", 2e-2)],
)  # fmt: skip
def test_round_trip_error_within_thresholds(mode, threshold):
    x = torch.randn(64, 1024).to(torch.bfloat16) * torch.rand(64, 1) * 10  # rows of very different ranges
    data, scales = quantize(x, mode)
    assert (data.dtype, data.shape[1], scales.dtype, tuple(scales.shape)) == LAYOUTS[mode]
    assert calc_diff(dequantize(data, scales), x.float()) < threshold
    if mode == "int8":
        assert data.abs().max() <= 127


@pytest.mark.parametrize("mode", ["mx_fp8_e4m3", "mx_fp8_e5m2", "mx_fp4_e2m1"])
def test_mx_scales_are_the_blocks_power_of_two(mode):
    empty, empty_scales = quantize(torch.zeros(0, 64), mode)  # no tokens is valid
    assert empty.shape[0] == 0 and empty_scales.shape == (0, 2) and dequantize(empty, empty_scales).shape == (0, 64)
    x = torch.randn(8, 256) * torch.logspace(-3, 3, 8).unsqueeze(1)
    x[0, :32] = 0  # an all-zero block: the smallest scale, zero elements
    data, scales = quantize(x, mode)
    emax = {"mx_fp8_e4m3": 8, "mx_fp8_e5m2": 15, "mx_fp4_e2m1": 2}[mode]
    amax = x.view(8, -1, 32).abs().amax(-1)
    want = torch.where(amax > 0, torch.floor(torch.log2(amax)) - emax, -127.0)
    assert torch.equal(scales.float(), torch.exp2(want))
    values = unpack_fp4(data) if mode == "mx_fp4_e2m1" else data.float()
    assert torch.equal(values[0, :32], torch.zeros(32))


def test_fp4_codes_round_to_nearest_even():
    y = torch.tensor([[0.0, 0.25, 0.26, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 5.1, -6.0, -0.5, 3.0, 1.5, 1e9, -1e9]])
    data, scales = quantize(y.repeat(1, 2), "mx_fp4_e2m1")  # a block of 32 with amax 1e9: scale 2^27
    got = unpack_fp4(data)[0, :16] * scales.float()[0, 0]
    assert scales.float()[0, 0] == 2.0**27 and got[-2:].tolist() == [6 * 2.0**27, -6 * 2.0**27]
    small, _ = quantize(torch.cat([y[:, :14], torch.tensor([[6.0, 0.0]])], 1).repeat(1, 2), "mx_fp4_e2m1")
    # amax 6: scale 1, so the codes are the values themselves; ties go to the even code (0, 1, 2, 4)
    assert unpack_fp4(small)[0, :14].tolist() == [0, 0, 0.5, 1, 1, 2, 2, 4, 4, 6, -6, -0.5, 3, 1.5]
    # the even channel in the low nibble: channels 2 and 3 hold codes 1 (0.5) and 2 (1.0)
    assert small.view(torch.uint8)[0, :2].tolist() == [0x00, 0x21] and FP4_VALUES[1:3] == (0.5, 1.0)


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
    with pytest.raises(RuntimeError, match="divisible by 32"):
        quantize(torch.randn(2, 48), "mx_fp8_e4m3")
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
