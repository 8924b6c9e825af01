"""Shape/dtype/device checks of every op (shared by the fake impls and the Triton impls) and the fakes."""

from __future__ import annotations

import torch
from sgl_npu_core.checks import (
    check,
    check_channel_param,
    check_dtype,
    check_float,
    check_rows,
    check_same_device,
)
from sgl_npu_core.library import OpLibrary

LIB = OpLibrary("sgl_npu_norm")


def check_same_rows(t: torch.Tensor, ref: torch.Tensor, name: str, cols: int | None = None) -> None:
    rows, ref_cols = check_rows(ref, "x")
    want = ref_cols if cols is None else cols
    got_rows, got_cols = check_rows(t, name)
    check((got_rows, got_cols) == (rows, want), f"{name} must have {rows} rows of {want}, got {got_rows} x {got_cols}")
    check_same_device(t, ref, name, "x")


def check_norm(x, weight, bias, eps, quant_scale, quant_offset, out) -> None:
    check(eps >= 0, f"eps must be >= 0, got {eps}")
    check_float(x, "x")
    _, hidden = check_rows(x, "x")
    check_channel_param(weight, hidden, x, "weight")
    for name, p in (("bias", bias), ("quant_scale", quant_scale), ("quant_offset", quant_offset)):
        check_channel_param(p, hidden, x, name)
    check(quant_offset is None or quant_scale is not None, "quant_offset needs quant_scale")
    check_same_rows(out, x, "out")
    check_dtype(out, torch.int8 if quant_scale is not None else x.dtype, "out")


def check_residual(x, residual, name="residual") -> None:
    check_same_rows(residual, x, name)
    check_dtype(residual, x.dtype, name)


def check_glu(x, out, out_dtype, out_name="out", limit=None) -> None:
    check(limit is None or limit > 0, f"limit must be > 0, got {limit}")
    check_float(x, "x")
    _, cols = check_rows(x, "x")
    check(cols % 2 == 0, f"x must have an even last dim (gate and up halves), got {cols}")
    check_same_rows(out, x, out_name, cols // 2)
    check_dtype(out, out_dtype, out_name)


def check_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale) -> None:
    check_glu(x, q, torch.int8, "q", limit if do_limit else None)
    check_dtype(scale, torch.float32, "scale")
    check(scale.is_contiguous(), "scale must be contiguous")  # written at its flat row index
    check(scale.numel() == x.numel() // x.shape[-1], "scale must have one element per row of x")
    check_same_device(scale, x, "scale", "x")
    if group_list is not None:
        check(group_list.dim() == 1 and group_list.numel() > 0, "group_list must be a non-empty 1-D tensor")
        check(
            group_list.dtype in (torch.int32, torch.int64), f"group_list must be int32 or int64, got {group_list.dtype}"
        )
        check(group_list_type in (0, 1), f"group_list_type must be 0 (cumulative) or 1 (counts), got {group_list_type}")
        check_same_device(group_list, x, "group_list", "x")


@LIB.fake("rmsnorm")
def _(x, weight, bias, eps, gemma, quant_scale, quant_offset, out):
    check_norm(x, weight, bias, eps, quant_scale, quant_offset, out)


@LIB.fake("add_rmsnorm")
def _(x, residual, weight, bias, eps, gemma, quant_scale, quant_offset, out, added):
    check_norm(x, weight, bias, eps, quant_scale, quant_offset, out)
    check_residual(x, residual)
    check_residual(x, added, "added")


@LIB.fake("fused_add_rmsnorm")
def _(x, residual, weight, eps, gemma):
    check_norm(x, weight, None, eps, None, None, x)
    check_residual(x, residual)


@LIB.fake("silu_and_mul")
def _(x, out):
    check_glu(x, out, x.dtype)


@LIB.fake("swiglu_oai")
def _(x, alpha, limit, out):
    check_glu(x, out, x.dtype, limit=limit)


@LIB.fake("swiglu_quant")
def _(x, group_list, group_list_type, do_limit, limit, q, scale):
    check_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale)
