"""``mla_preprocess``: the fused DeepSeek MLA prolog (int8 down / up projections, RMSNorms, RoPE, cache writes)."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import check_apart
from sgl_npu_core.memory import empty

from . import _meta
from .reference import rope_half

_quant_rows = torch.ops.sgl_npu_attention.mla_quant_rows.default
_int8_mm = torch.ops.sgl_npu_attention.mla_int8_matmul.default
_cache_write = torch.ops.sgl_npu_attention.mla_cache_write.default

QUANT_MODES = ("per_token_quant_symm", "per_tensor_quant_asymm")
EPS = 1e-6


def _quantize(x, gamma, beta, quant_mode, quant_scale, quant_offset):
    """int8 codes of (the RMSNorm of) x and their per-row scale, by the C++ row kernel."""
    codes = empty(x.shape, dtype=torch.int8, device=x.device)
    row_scale = empty(x.shape[0], dtype=torch.float32, device=x.device)
    if quant_mode == "per_tensor_quant_asymm":
        quant_scale, quant_offset = quant_scale.float().reshape(1), quant_offset.float().reshape(1)
    else:
        quant_scale = quant_offset = None
    _quant_rows(x, gamma, beta, EPS, quant_scale, quant_offset, codes, row_scale)
    return codes, row_scale


def _int8_matmul(codes, weight, descale, row_scale, bias, dtype):
    # Exact integer sums read straight from the int8 weights: a float GEMM would first convert them, which costs
    # more than the whole op at decode sizes (and torch._int_mm is far slower on CPU).
    out = empty(codes.shape[0], weight.shape[0], dtype=dtype, device=codes.device)
    _int8_mm(codes, weight, descale, row_scale, bias, out)
    return out


def mla_preprocess(hiddenState, gamma0, beta0, wdqkv, descale0, gamma1, beta1, wuq, descale1, gamma2, cos, sin, wuk,
                   kv_cache, kv_cache_rope, slotmapping, quant_scale0, quant_offset0, bias0, quant_scale1,
                   quant_offset1, bias1, *, ctkv_scale=None, q_nope_scale=None, cache_mode=None, quant_mode=None,
                   q_out0=None, kv_cache_out0=None, q_out1=None, kv_cache_out1=None):  # fmt: skip
    """The DeepSeek MLA prolog of N tokens (argument names as upstream's ``mla_preprocess``; plain ND layouts).

    ``hiddenState`` (already normed: gamma0 / beta0 are unused) is int8-quantized, multiplied by ``wdqkv`` and
    dequantized into ``[kv_latent | k_pe | q_a]``; q_a is RMSNorm'd (gamma1, beta1), quantized, multiplied by ``wuq``
    and dequantized into per-head ``[q_nope | q_pe]``; ``q_out0 = q_nope @ wuk[h]``, ``q_out1 = rope_half(q_pe)``;
    RMSNorm(gamma2) of kv_latent and rope_half(k_pe) are written to ``kv_cache`` / ``kv_cache_rope`` at
    ``slotmapping``. See :func:`sgl_npu_attention.reference.mla_preprocess` for the exact stages.

    Parameters
    ----------
    hiddenState : [N, hidden] float16 / bfloat16 / float32 (every stage rounds to this dtype)
    wdqkv : int8 [kv_lora + rope + q_lora, hidden] (out x in, ND); descale0 : fp32 [kv_lora + rope + q_lora]
    gamma1, beta1 : [q_lora]; gamma2 : [kv_lora] (hiddenState's dtype)
    wuq : int8 [heads * (nope + rope), q_lora]; descale1 : fp32 [heads * (nope + rope)]
    cos, sin : [N, rope] per-token rotate-half RoPE tables; wuk : [heads, nope, kv_lora]
    kv_cache : [blocks, page, 1, kv_lora], kv_cache_rope : [blocks, page, 1, rope], written in place
    slotmapping : int32 [N], cache slot ``block * page + row`` of each token; all checked before any write
    quant_scale0 / quant_offset0 / bias0 (int32 [kv_lora + rope + q_lora]), and the same with 1 for wuq: used by
        ``per_tensor_quant_asymm`` (code = round(x / scale + offset), the bias folds the offset back out);
        ``per_token_quant_symm`` (the default) scales each row by max|x| / 127 and ignores them
    cache_mode : ``"krope_ctkv"`` (the default; NZ and int8 caches are not supported); ctkv_scale, q_nope_scale:
        only for the int8 cache, must be None
    q_out0, q_out1 : optional preallocated [N, heads, kv_lora] and [N, heads, rope]; kv_cache_out0 / kv_cache_out1:
        None or the caches themselves

    Returns ``(q_out0, kv_cache, q_out1, kv_cache_rope)``.
    """
    quant_mode = quant_mode or "per_token_quant_symm"
    cache_mode = cache_mode or "krope_ctkv"
    _meta.check(quant_mode in QUANT_MODES, f"quant_mode must be one of {QUANT_MODES}, got {quant_mode!r}")
    if cache_mode != "krope_ctkv" or ctkv_scale is not None or q_nope_scale is not None:
        raise NotImplementedError(f"mla_preprocess supports only cache_mode 'krope_ctkv', got {cache_mode!r}")
    for out, cache, name in ((kv_cache_out0, kv_cache, "kv_cache_out0"), (kv_cache_out1, kv_cache_rope,
                                                                        "kv_cache_out1")):  # fmt: skip
        _meta.check(out is None or out is cache, f"{name} must be None or the cache itself (written in place)")
    _meta.check_prolog(hiddenState, wdqkv, descale0, gamma1, beta1, wuq, descale1, gamma2, cos, sin, wuk, kv_cache,
                       kv_cache_rope, slotmapping, quant_scale0, quant_offset0, bias0, quant_scale1, quant_offset1,
                       bias1, q_out0, q_out1)  # fmt: skip
    n, dtype = hiddenState.shape[0], hiddenState.dtype
    heads, nope, kv_lora, rope = wuk.shape[0], wuk.shape[1], gamma2.shape[0], cos.shape[-1]
    # The caches are written first, then q_out0 and q_out1: no output may land on another's memory. Outputs made
    # here cannot, and the cache write checks the two caches itself, so only given q outputs are compared.
    given = [(name, t) for name, t in (("q_out0", q_out0), ("q_out1", q_out1)) if t is not None]
    others = [*given, ("kv_cache_rope", kv_cache_rope), ("kv_cache", kv_cache)]
    for i, (name, t) in enumerate(given):
        for other_name, other in others[i + 1 :]:
            check_apart(t, other, name, other_name)
    if q_out0 is None:
        q_out0 = empty(n, heads, kv_lora, dtype=dtype, device=hiddenState.device)
    if q_out1 is None:
        q_out1 = empty(n, heads, rope, dtype=dtype, device=hiddenState.device)
    symm = quant_mode == "per_token_quant_symm"
    codes, scale = _quantize(hiddenState, None, None, quant_mode, quant_scale0, quant_offset0)
    mm1 = _int8_matmul(codes, wdqkv, descale0, scale, None if symm else bias0, dtype)
    latent, k_pe, q_a = mm1.split([kv_lora, rope, mm1.shape[1] - kv_lora - rope], dim=-1)
    # first: it checks every slot before writing, so a bad slotmapping fails before any output is written
    _cache_write(latent, k_pe, gamma2, cos, sin, slotmapping, EPS, kv_cache, kv_cache_rope)
    codes, scale = _quantize(q_a, gamma1, beta1, quant_mode, quant_scale1, quant_offset1)
    q = _int8_matmul(codes, wuq, descale1, scale, None if symm else bias1, dtype).view(n, heads, nope + rope)
    torch.ops.sgl_npu_attention.batch_matmul_transpose.default(q[..., :nope], wuk, q_out0)
    q_out1.copy_(rope_half(q[..., nope:], cos, sin))
    return q_out0, kv_cache, q_out1, kv_cache_rope
