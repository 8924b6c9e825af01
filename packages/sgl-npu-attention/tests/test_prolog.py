"""mla_preprocess (the fused DeepSeek MLA prolog) against the PyTorch reference, which quantizes the same way."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import reference as ref
from sgl_npu_attention.testing import prolog_inputs
from sgl_npu_core.testing import assert_close, assert_codes_close

MODES = ["per_token_quant_symm", "per_tensor_quant_asymm"]
# hidden, q_lora, kv_lora, rope, nope, heads, page_size, blocks: a small DeepSeek-like geometry
GEOMETRY = dict(hidden=256, q_lora=96, kv_lora=64, rope=16, nope=32, heads=4, page_size=16, blocks=5)


def _inputs(dtype, mode, tokens=13, **kw):
    return list(prolog_inputs(tokens, **{**GEOMETRY, **kw}, dtype=dtype, quant_mode=mode))


def _clone(args):
    return [a.clone() for a in args]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference(dtype, mode, seed):
    torch.manual_seed(seed)
    args = _inputs(dtype, mode)
    expected = ref.mla_preprocess(*_clone(args), quant_mode=mode)
    got = ops.mla_preprocess(*args, quant_mode=mode)
    assert got[1] is args[13] and got[3] is args[14]  # the caches, written in place
    # A one-ulp difference in an RMSNorm (summation order) may move a q_a code by one, which moves q by ~5e-3 (seen
    # in fp32, where nothing rounds the difference away; over 40 seeds at most 6.6e-4 relative error).
    for name, a, e in zip(["q_out0", "kv_cache", "q_out1", "kv_cache_rope"], got, expected, strict=True):
        assert_close(a, e, atol=1e-2, rtol=1e-2, max_rel_error=2e-3, name=name)
    assert (got[1] != 7).any(-1).sum() == 13, "exactly one cache row per token is written"


def test_default_quant_mode_is_per_token_and_outputs_are_filled():
    torch.manual_seed(1)
    args = _inputs(torch.bfloat16, MODES[0], tokens=3)
    q_out0, q_out1 = (
        torch.full((3, 4, 64), 9.0, dtype=torch.bfloat16),
        torch.full((3, 4, 16), 9.0, dtype=torch.bfloat16),
    )
    got = ops.mla_preprocess(*_clone(args), q_out0=q_out0, q_out1=q_out1)
    assert got[0] is q_out0 and got[2] is q_out1
    expected = ref.mla_preprocess(*_clone(args))
    assert_close(q_out0, expected[0], atol=1e-2, rtol=1e-2)
    assert_close(q_out1, expected[2], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("norm", [False, True])
def test_quant_rows_codes(mode, norm):
    torch.manual_seed(2)
    x = (torch.randn(37, 200) * 2).bfloat16()
    gamma, beta = (torch.rand(200) + 0.5).bfloat16(), (torch.randn(200) * 0.1).bfloat16()
    per_tensor = mode == MODES[1]
    scale, offset = (torch.tensor([0.02]), torch.tensor([-3.0])) if per_tensor else (None, None)
    codes, row_scale = torch.empty(37, 200, dtype=torch.int8), torch.empty(37)
    torch.ops.sgl_npu_attention.mla_quant_rows(x, gamma if norm else None, beta if norm else None, 1e-6, scale,
                                               offset, codes, row_scale)  # fmt: skip
    y = ref.rms_norm(x, gamma, beta) if norm else x
    want_codes, want_scale = ref.quantize_int8(y, mode, scale, offset)
    assert_codes_close(codes, want_codes)
    assert_close(row_scale, want_scale, atol=0, rtol=1e-6)
    assert codes.min() == -128 if per_tensor else codes.abs().max() == 127  # saturates / reaches full scale


def test_reference_against_unquantized_float_prolog():
    """The reference's int8 stages approximate the same prolog in plain fp32 on dequantized weights."""
    torch.manual_seed(3)
    args = _inputs(torch.float32, MODES[0], tokens=5)
    (x, _, _, wdqkv, d0, g1, b1, wuq, d1, g2, cos, sin, wuk, kv, kr, slots) = args[:16]
    got = ref.mla_preprocess(*_clone(args))
    mm1 = x @ (wdqkv.float() * d0[:, None]).T
    latent, k_pe, q_a = mm1.split([64, 16, 96], dim=-1)
    q = (ref.rms_norm(q_a, g1, b1) @ (wuq.float() * d1[:, None]).T).view(5, 4, 48)
    q_out0 = torch.einsum("thn,hnl->thl", q[..., :32], wuk)
    # RoPE as a complex rotation of (x_i, x_{i+8}) pairs by the token's angle
    pairs = torch.complex(q[..., 32:40], q[..., 40:])
    rot = pairs * torch.complex(cos[:, None, :8], sin[:, None, :8])
    q_out1 = torch.cat([rot.real, rot.imag], dim=-1)
    assert_close(got[0], q_out0, atol=0.05, rtol=0.05, max_rel_error=0.02)
    assert_close(got[2], q_out1, atol=0.05, rtol=0.05, max_rel_error=0.02)
    rows = got[1].view(-1, 64)[slots.long()]
    assert_close(rows, ref.rms_norm(latent, g2), atol=0.05, rtol=0.05, max_rel_error=0.02)


def test_bad_slot_raises_before_the_caches_are_written():
    torch.manual_seed(4)
    args = _inputs(torch.bfloat16, MODES[0], tokens=4)
    args[15][2] = 5 * 16  # one past the last slot
    with pytest.raises(RuntimeError, match="slotmapping"):
        ops.mla_preprocess(*args)
    assert (args[13] == 7).all() and (args[14] == 7).all()


BAD = {
    "hiddenState dims": (0, lambda t: t[0], "hiddenState"),
    "wdqkv dtype": (3, lambda t: t.float(), "wdqkv"),
    "wdqkv hidden": (3, lambda t: t[:, :128], "wdqkv"),
    "descale0 size": (4, lambda t: t[:-1], "descale0"),
    "gamma1 dtype": (5, lambda t: t.float(), "gamma1"),
    "wuq shape": (7, lambda t: t[:-1], "wuq"),
    "sin shape": (11, lambda t: t[:, :8], "sin"),
    "wuk dtype": (12, lambda t: t.float(), "wuk"),
    "kv_cache dim": (13, lambda t: t[..., :32], "kv_cache"),
    "kv_cache_rope blocks": (14, lambda t: t[:2], "kv_cache_rope"),
    "slotmapping dtype": (15, lambda t: t.long(), "slotmapping"),
    "bias1 dtype": (21, lambda t: t.float(), "bias1"),
    "wdqkv transposed": (3, lambda t: t.T.contiguous().T, "wdqkv"),
    "hiddenState strided": (0, lambda t: t.T.contiguous().T, "hiddenState"),
    "quant_scale0 size": (16, lambda t: t.repeat(2), "quant_scale0"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_malformed_input_names_the_argument(case, device):
    index, change, needle = BAD[case]
    args = _inputs(torch.bfloat16, MODES[0], tokens=4)
    args[index] = change(args[index])
    args = [a.to(device) for a in args]
    with pytest.raises(RuntimeError, match=needle):
        ops.mla_preprocess(*args)
    if device == "cpu":
        assert (args[13] == 7).all()


def test_unsupported_modes():
    args = _inputs(torch.bfloat16, MODES[0], tokens=2)
    with pytest.raises(RuntimeError, match="quant_mode"):
        ops.mla_preprocess(*args, quant_mode="per_channel")
    with pytest.raises(NotImplementedError, match="krope_ctkv"):
        ops.mla_preprocess(*args, cache_mode="nzcache")


@pytest.mark.parametrize("m,n,k", [(1, 7, 20), (6, 33, 100), (70, 20, 1040)])
@pytest.mark.parametrize("bias", [False, True])
def test_int8_matmul_is_exact(m, n, k, bias):
    """Integer sums are exact: the dequantized fp32 values match the reference bit for bit (extreme codes too)."""
    torch.manual_seed(5)
    codes = torch.randint(-128, 128, (m, k), dtype=torch.int8)
    codes[0, :] = -128
    weight = torch.randint(-128, 128, (n, k), dtype=torch.int8)
    weight[0, :] = -128
    descale, row_scale = torch.rand(n) + 0.5, torch.rand(m) + 0.5
    b = torch.randint(-(2**20), 2**20, (n,), dtype=torch.int32) if bias else None
    out = torch.empty(m, n)
    torch.ops.sgl_npu_attention.mla_int8_matmul(codes, weight, descale, row_scale, b, out)
    assert torch.equal(out, ref.int8_matmul(codes, weight, descale, row_scale, b, torch.float32))
    scale = float(descale[0] * row_scale[0])  # row 0 x channel 0: k products of -128 x -128
    assert float(out[0, 0]) == pytest.approx((k * 16384 + (int(b[0]) if bias else 0)) * scale, rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_device_path_matches_the_cpu_ops(mode, monkeypatch):
    """The cuda / npu impls of the three row / GEMM ops (reference device ops), run here on CPU tensors through the
    whole op, give the C++ result."""
    from sgl_npu_attention import _accelerator, prolog

    torch.manual_seed(6)
    args = _inputs(torch.bfloat16, mode)
    expected = ops.mla_preprocess(*_clone(args), quant_mode=mode)
    monkeypatch.setattr(prolog, "_quant_rows", _accelerator._quant_rows)
    monkeypatch.setattr(prolog, "_int8_mm", _accelerator._int8_matmul)
    monkeypatch.setattr(prolog, "_cache_write", _accelerator._cache_write)
    got = ops.mla_preprocess(*args, quant_mode=mode)
    for name, a, e in zip(["q_out0", "kv_cache", "q_out1", "kv_cache_rope"], got, expected, strict=True):
        assert_close(a, e, atol=1e-2, rtol=1e-2, max_rel_error=2e-3, name=name)
    args[15][0] = -1
    with pytest.raises(RuntimeError, match="slotmapping"):
        ops.mla_preprocess(*args, quant_mode=mode)


@pytest.mark.parametrize("bad", [0.0, float("inf"), float("nan")])
@pytest.mark.parametrize("position", [16, 19], ids=["quant_scale0", "quant_scale1"])
def test_per_tensor_scales_must_be_finite_and_nonzero(bad, position):
    # codes are round(x / scale + offset): such a scale would make NaN codes
    args = _inputs(torch.bfloat16, "per_tensor_quant_asymm")
    args[position] = torch.tensor([bad], dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="quant_scale must be finite and nonzero"):
        ops.mla_preprocess(*args, quant_mode="per_tensor_quant_asymm")


def test_caches_and_outputs_that_share_memory_are_refused():
    # several threads write the cache rows, and q_out0 / q_out1 are written after the caches
    args = _inputs(torch.bfloat16, "per_token_quant_symm")
    kv_cache, kv_cache_rope = args[13], args[14]
    cases = {
        "kv_cache must not overlap itself": {13: kv_cache[:1, :1].expand(kv_cache.shape)},
        "kv_cache_rope must not overlap kv_cache": {14: kv_cache[..., : kv_cache_rope.shape[-1]]},
    }
    for needle, changes in cases.items():
        bad = list(args)
        for i, t in changes.items():
            bad[i] = t
        with pytest.raises(RuntimeError, match=needle):
            ops.mla_preprocess(*bad, quant_mode="per_token_quant_symm")
    n, heads, kv_lora = args[0].shape[0], args[12].shape[0], kv_cache.shape[-1]
    q_out0 = kv_cache.view(-1)[: n * heads * kv_lora].view(n, heads, kv_lora)
    with pytest.raises(RuntimeError, match="q_out0 must not overlap kv_cache"):
        ops.mla_preprocess(*args, quant_mode="per_token_quant_symm", q_out0=q_out0)
