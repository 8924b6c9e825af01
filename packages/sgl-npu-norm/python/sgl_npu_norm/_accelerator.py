"""cuda / npu implementations of the ops: the Triton kernels, or the references where Triton is missing.

Both take the op schema's arguments (outputs preallocated) and are registered on the CUDA and PrivateUse1
dispatch keys; the Triton module is imported only when an accelerator tensor first arrives.
"""

from __future__ import annotations

import torch

from . import _meta, reference
from ._meta import LIB


def _triton():
    from . import triton as kernels

    return kernels


def _ref_rmsnorm(x, weight, bias, eps, gemma, quant_scale, quant_offset, out):
    _meta.check_norm(x, weight, bias, eps, quant_scale, quant_offset, out)
    y = reference.rmsnorm(x, weight, eps, bias=bias, gemma=gemma, quant_scale=quant_scale, quant_offset=quant_offset)
    out.copy_(y)


def _ref_add_rmsnorm(x, residual, weight, bias, eps, gemma, quant_scale, quant_offset, out, added):
    _meta.check_norm(x, weight, bias, eps, quant_scale, quant_offset, out, residual, added)
    y, s = reference.add_rmsnorm_bias(x, residual, weight, bias, eps, quant_scale, quant_offset, gemma=gemma)
    added.copy_(s)
    out.copy_(y)


def _ref_fused_add_rmsnorm(x, residual, weight, eps, gemma):
    _meta.check_norm(x, weight, None, eps, None, None, x, residual)
    y, s = reference.fused_add_rmsnorm(x, residual, weight, eps, gemma=gemma)
    residual.copy_(s)
    x.copy_(y)


def _ref_split_sum_squares(x, width0, width1, out):
    _meta.check_split_sum_squares(x, width0, width1, out)
    out.copy_(reference.split_sum_squares(x, width0, width1))


def _ref_silu_and_mul(x, out):
    _meta.check_glu(x, out, x.dtype)
    out.copy_(reference.silu_and_mul(x))


def _ref_swiglu_oai(x, alpha, limit, out):
    _meta.check_glu(x, out, x.dtype, limit=limit, alpha=alpha)
    out.copy_(reference.swiglu_oai(x, alpha, limit))


def _ref_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale):
    _meta.check_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale)
    if group_list is not None:  # the C++ op's data checks, after a host sync
        steps = group_list.long() if group_list_type == 1 else group_list.long().diff(prepend=group_list.new_zeros(1))
        _meta.check(bool((steps >= 0).all()), "group_list counts must be >= 0 (cumulative: non-decreasing)")
        total = reference.grouped_row_count(group_list, group_list_type)
        _meta.check(0 <= total <= scale.numel(), f"group_list covers {total} rows, x has {scale.numel()}")
    q_ref, s_ref = reference.swiglu_quant(x, group_list, group_list_type, do_limit, limit)
    q.copy_(q_ref)
    scale.copy_(s_ref.reshape(scale.shape))


def _ref_head_norm_rope(*args):
    for size, group in _meta.head_groups(*args):
        _run_ref_head_norm_rope(size, *group)


def _run_ref_head_norm_rope(size, x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox,
                            full_width, out, also_copy=None):  # fmt: skip
    """The reference on checked arguments, after the data check the CPU op makes (a host sync here); then
    ``also_copy``'s (src, dst), as the Triton launch copies it."""
    args = (weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox, full_width)
    if rope_dim and positions is not None:
        _meta.check(bool(((positions >= 0) & (positions < cos.shape[0])).all()), "positions outside the cos/sin cache")
    out.copy_(reference.head_norm_rope(out if x is None else x, *args))
    if also_copy is not None:
        also_copy[1].copy_(also_copy[0])


def _split_qkv_norm_rope_with(run_head_norm_rope, split_sum_squares):
    """split_qkv_norm_rope on a device: ``run_head_norm_rope(size, *args, also_copy)`` (unchecked) on the q heads,
    copying the gates, and on the k heads, copying v (views of qkv), once both groups are checked. A whole-width
    norm takes its statistics from ``split_sum_squares`` where q's columns are contiguous (torch's
    float().pow(2).sum() of them took 3x the fused kernel on an H200)."""

    def impl(qkv, head_dim, q_heads, kv_heads, q_gate, q_weight, k_weight, q_bias, k_bias, eps, gemma, norm, rstd,
             whole_width, cos, sin, positions, rope_dim, neox, full_width, q, k, v, gate):  # fmt: skip
        _meta.check_split_qkv_norm_rope(
            qkv, head_dim, q_heads, kv_heads, q_gate, norm, rstd, whole_width, q, k, v, gate
        )
        q_in, k_in, v_in, gate_in = _meta.qkv_views(qkv, head_dim, q_heads, kv_heads, q_gate)
        if whole_width and not q_gate and q_heads and kv_heads:  # split_sum_squares takes widths > 0
            q_width, k_width = q_heads * head_dim, kv_heads * head_dim
            sums = torch.empty(qkv.shape[0], 2, dtype=torch.float32, device=qkv.device)
            split_sum_squares(qkv, q_width, k_width, sums)
            rq, rk = _meta.rstd_of_sums(sums, q_width, k_width, eps)
        else:
            rq, rk = _meta.group_rstd(q_in, k_in, rstd, whole_width, eps)
        tables = (cos, sin, positions, rope_dim, neox, full_width)
        q_args = (q_in, q_weight, q_bias, eps, gemma, norm, rq, *tables, q.unflatten(-1, (q_heads, head_dim)))
        k_args = (k_in, k_weight, k_bias, eps, gemma, norm, rk, *tables, k.unflatten(-1, (kv_heads, head_dim)))
        q_size, k_size = _meta.check_head_norm_rope(*q_args), _meta.check_head_norm_rope(*k_args)
        gates = (gate_in, gate.unflatten(-1, (q_heads, head_dim))) if gate is not None else None
        values = tuple(t.unflatten(-1, (kv_heads, head_dim)) for t in (v_in, v))
        run_head_norm_rope(q_size, *q_args, gates)  # both groups are checked before q is written
        run_head_norm_rope(k_size, *k_args, values)

    return impl


def _mrope_tables(cos_sin, section_t, section_h, section_w, interleaved, out):
    """The T axis's rows, with the H and W frequencies copied over theirs as strided slices."""
    _meta.check_mrope_tables(cos_sin, section_t, section_h, section_w, interleaved, out)
    (tokens, rope_dim), half = out.shape, out.shape[1] // 2
    out.copy_(cos_sin[0, :, :rope_dim])
    halves = out.view(tokens, 2, half)
    for axis, freqs in enumerate(_meta.mrope_freqs(section_t, section_h, section_w, interleaved), start=1):
        halves[:, :, freqs] = cos_sin[axis, :, :rope_dim].reshape(tokens, 2, half)[:, :, freqs]


def _register(name, reference_impl):
    LIB.accelerator_impl(name, lambda *a: getattr(_triton(), name)(*a), reference_impl)


_register("rmsnorm", _ref_rmsnorm)
_register("add_rmsnorm", _ref_add_rmsnorm)
_register("fused_add_rmsnorm", _ref_fused_add_rmsnorm)
_register("split_sum_squares", _ref_split_sum_squares)
_register("silu_and_mul", _ref_silu_and_mul)
_register("swiglu_oai", _ref_swiglu_oai)
_register("swiglu_quant", _ref_swiglu_quant)
_register("head_norm_rope", _ref_head_norm_rope)
LIB.accelerator_impl("mrope_tables", _mrope_tables, _mrope_tables)  # data movement only: torch ops on the device
LIB.accelerator_impl(
    "split_qkv_norm_rope",
    lambda *a: _split_qkv_norm_rope_with(_triton().launch_head_norm_rope, _triton().split_sum_squares)(*a),
    _split_qkv_norm_rope_with(_run_ref_head_norm_rope, _ref_split_sum_squares),
)
