"""Shape/dtype/device checks of every op (shared by the fake impls and the Triton impls) and the fakes."""

from __future__ import annotations

import math

import torch
from sgl_npu_core.checks import (
    check,
    check_apart,
    check_channel_param,
    check_contiguous,
    check_disjoint,
    check_dtype,
    check_float,
    check_last_dim_contiguous,
    check_rows,
    check_same_device,
    check_same_dtype,
    check_same_or_apart,
    check_written_apart,
    fail,
    has_memory,
)
from sgl_npu_core.library import OpLibrary

LIB = OpLibrary("sgl_npu_norm")


def check_same_rows(t: torch.Tensor, ref: torch.Tensor, name: str, cols: int | None = None) -> None:
    rows, ref_cols = check_rows(ref, "x")
    want = ref_cols if cols is None else cols
    got_rows, got_cols = check_rows(t, name)
    check((got_rows, got_cols) == (rows, want), f"{name} must have {rows} rows of {want}, got {got_rows} x {got_cols}")
    check_same_device(t, ref, name, "x")


def check_norm(x, weight, bias, eps, quant_scale, quant_offset, out, residual=None, added=None) -> None:
    """The RMSNorm family's checks (with ``residual`` for the add variants; ``added`` for add_rmsnorm, whose
    fused in-place form writes x and residual)."""
    check(eps >= 0, f"eps must be >= 0, got {eps}")
    check_float(x, "x")
    _, hidden = check_rows(x, "x")
    check_channel_param(weight, hidden, x, "weight")
    for name, p in (("bias", bias), ("quant_scale", quant_scale), ("quant_offset", quant_offset)):
        check_channel_param(p, hidden, x, name)
    check(quant_offset is None or quant_scale is not None, "quant_offset needs quant_scale")
    check_same_rows(out, x, "out")
    check_dtype(out, torch.int8 if quant_scale is not None else x.dtype, "out")
    if residual is not None:
        check_residual(x, residual)
    if added is not None:
        check_residual(x, added, "added")
    # In place is fine (each row is read before it is written); partial overlaps and two outputs on one memory
    # are not, as the C++ ops.
    check_same_or_apart(out, x, "out", "x")
    written = [("out", out), ("added", added) if added is not None else ("residual", residual)]
    for name, t in written:  # a parameter in a written tensor would change under the rows after
        for p_name, p in (("weight", weight), ("bias", bias), ("quant_scale", quant_scale),
                          ("quant_offset", quant_offset)):  # fmt: skip
            if p is not None and t is not None:
                check_apart(t, p, name, p_name)
    if residual is not None and added is None:
        check_apart(residual, x, "residual", "x")
    if added is not None:
        check_apart(out, added, "out", "added")
        check_same_or_apart(out, residual, "out", "residual")
        check_same_or_apart(added, x, "added", "x")
        check_same_or_apart(added, residual, "added", "residual")


def check_residual(x, residual, name="residual") -> None:
    check_same_rows(residual, x, name)
    check_dtype(residual, x.dtype, name)


def check_split_sum_squares(x, width0, width1, out) -> None:
    check_float(x, "x")
    rows, cols = check_rows(x, "x")
    check(0 < width0 <= cols and 0 < width1 <= cols - width0,
          f"width0 and width1 must be > 0 and fit x's {cols} columns together, got {width0} and {width1}")  # fmt: skip
    check_dtype(out, torch.float32, "out")
    check(tuple(out.shape) == (rows, 2), f"out must have shape [{rows}, 2]")
    check_contiguous(out, "out")
    check_same_device(out, x, "out", "x")
    check_apart(out, x, "out", "x")


def mrope_freqs(section_t, section_h, section_w, interleaved):
    """The H and W axes' rotary frequencies ``(slice, slice)`` (the T axis gives the rest; see reference.mrope_axes)."""
    if interleaved:  # frequencies 1, 4, 7, ... below 3h from H, 2, 5, 8, ... below 3w from W
        return slice(1, 3 * section_h, 3), slice(2, 3 * section_w, 3)
    return slice(section_t, section_t + section_h), slice(section_t + section_h, None)


def check_mrope_tables(cos_sin, section_t, section_h, section_w, interleaved, out) -> None:
    check(cos_sin.dim() == 3 and cos_sin.shape[0] == 3, "cos_sin must be [3, tokens, rope_dim]")
    check_float(cos_sin, "cos_sin")
    check_same_dtype(out, cos_sin, "out", "cos_sin")
    tokens, width = cos_sin.shape[1:]
    if not (out.dim() == 2 and out.shape[0] == tokens and 0 < out.shape[1] <= width and out.shape[1] % 2 == 0):
        fail(f"out must be [{tokens}, rope_dim] with rope_dim even and at most cos_sin's {width} columns")
    check_contiguous(out, "out")
    check_same_device(out, cos_sin, "out", "cos_sin")
    check_apart(out, cos_sin, "out", "cos_sin")
    half, sections = out.shape[1] // 2, (section_t, section_h, section_w)
    if not (min(sections) >= 0 and sum(sections) == half):
        fail(f"mrope sections must be >= 0 and sum to rope_dim / 2 = {half}, got {list(sections)}")


def check_glu(x, out, out_dtype, out_name="out", limit=None, alpha=0.0) -> None:
    check(limit is None or limit > 0, f"limit must be > 0, got {limit}")
    check(math.isfinite(alpha), f"alpha must be finite, got {alpha}")
    check_float(x, "x")
    _, cols = check_rows(x, "x")
    check(cols % 2 == 0, f"x must have an even last dim (gate and up halves), got {cols}")
    check_same_rows(out, x, out_name, cols // 2)
    check_dtype(out, out_dtype, out_name)
    check_apart(out, x, out_name, "x")


def check_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale) -> None:
    check_glu(x, q, torch.int8, "q", limit if do_limit else None)
    check_dtype(scale, torch.float32, "scale")
    check(scale.is_contiguous(), "scale must be contiguous")  # written at its flat row index
    check(scale.numel() == x.numel() // x.shape[-1], "scale must have one element per row of x")
    check_apart(scale, x, "scale", "x")
    check_apart(scale, q, "scale", "q")
    check_same_device(scale, x, "scale", "x")
    if group_list is not None:
        check(group_list.dim() == 1 and group_list.numel() > 0, "group_list must be a non-empty 1-D tensor")
        check(
            group_list.dtype in (torch.int32, torch.int64), f"group_list must be int32 or int64, got {group_list.dtype}"
        )
        check(group_list_type in (0, 1), f"group_list_type must be 0 (cumulative) or 1 (counts), got {group_list_type}")
        check_same_device(group_list, x, "group_list", "x")


def check_heads(t, name) -> tuple[int, int, int]:
    check(t.dim() == 3, f"{name} must be [tokens, heads, head_dim], got {t.dim()} dims")
    check(t.shape[-1] > 0, f"{name} must have a non-empty head_dim")
    check_last_dim_contiguous(t, name)
    return tuple(t.shape)


def check_head_norm_rope(x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox, full_width,
                         out) -> int:  # fmt: skip
    """Checks the primitive's arguments (see HeadNormRopeArgs in kernels.h); returns the per-channel param size."""
    shape = check_heads(out, "out")
    check_disjoint(out, "out")
    src = out if x is None else x
    if x is not None:
        check(check_heads(x, "x") == shape, f"out must have the shape of x {list(x.shape)}, got {list(shape)}")
        check_same_device(out, x, "out", "x")
    check_float(src, "x")
    check_dtype(out, src.dtype, "out")
    if x is not None:
        check_same_or_apart(out, x, "out", "x")
    check(eps >= 0, f"eps must be >= 0, got {eps}")
    tokens, heads, width = shape
    size = heads * width if rstd is not None and weight is not None and weight.shape == (heads * width,) else width
    if norm:
        check_channel_param(weight, size, src, "weight")
        check_channel_param(bias, size, src, "bias")
    if rstd is not None:
        check(norm, "rstd needs norm=True")
        check_dtype(rstd, torch.float32, "rstd")
        check(rstd.shape == (tokens,), f"rstd must have shape [{tokens}]")
        check_contiguous(rstd, "rstd")
        check_same_device(rstd, src, "rstd", "x")
    check(0 <= rope_dim <= width and rope_dim % 2 == 0, f"rope_dim must be even and in [0, {width}], got {rope_dim}")
    if rope_dim:
        check(cos is not None and sin is not None, "cos and sin are needed when rope_dim > 0")
        need = rope_dim if neox and full_width else rope_dim // 2
        for name, t in (("cos", cos), ("sin", sin)):
            check(t.dim() == 2 and t.shape[-1] >= need, f"{name} must be [rows, >= {need}], got {list(t.shape)}")
            check_last_dim_contiguous(t, name)
            check_float(t, name)
            check_same_device(t, src, name, "x")
        check(sin.shape[0] == cos.shape[0] and sin.dtype == cos.dtype, "sin must have the rows and dtype of cos")
        check(sin.shape[0] <= 1 or sin.stride(0) == cos.stride(0), "sin must have the rows and row stride of cos")
        if positions is not None:
            check(
                positions.dtype in (torch.int32, torch.int64),
                f"positions must be int32 or int64, got {positions.dtype}",
            )
            check(positions.shape == (tokens,), f"positions must have shape [{tokens}]")
            check_contiguous(positions, "positions")
            check_same_device(positions, src, "positions", "x")
        else:
            check(cos.shape[0] >= tokens, f"cos must have a row per token ({tokens}), got {cos.shape[0]}")
    return size


def head_groups(x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox, full_width, out, x2=None,
                out2=None) -> list[tuple[int, tuple]]:  # fmt: skip
    """The op's head groups as ``(param size, one group's arguments)``: ``x`` into ``out``, and with ``out2`` the
    heads of ``x2`` (in place where None) with every other argument shared; all checked, as the C++ op, before
    any group runs."""
    first = (x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox, full_width, out)
    groups = [(check_head_norm_rope(*first), first)]
    check(out2 is not None or x2 is None, "x2 needs out2")
    if out2 is not None:
        second = (x2, *first[1:-1], out2)
        groups.append((check_head_norm_rope(*second), second))
        src = out if x is None else x
        if out2.shape[0] != out.shape[0] or out2.shape[2] != out.shape[2]:
            fail(f"x2 must have x's {out.shape[0]} tokens and {out.shape[2]}-wide heads")
        check_dtype(out2, src.dtype, "out2")
        check_same_device(out2, out, "out2", "out")
        if x2 is not None:  # each group may be in place, not over the other (in place: out2 against out, below)
            check_apart(out, x2, "out", "x2")
        if x is not None:
            check_apart(out2, x, "out2", "x")
    # The outputs apart, and from the positions indexed by per token after their check (the C++ op also checks
    # the other inputs every token reads).
    check_written_apart([("out", out), ("out2", out2)], [("positions", positions)])
    return groups


def qkv_views(qkv, head_dim, q_heads, kv_heads, q_gate):
    """(q [T, Hq, D], k [T, Hkv, D], v [T, kv], gate [T, Hq, D] or None) as views of the fused row."""
    q_width = q_heads * head_dim * (2 if q_gate else 1)
    kv = kv_heads * head_dim
    qg, k, v = qkv.split([q_width, kv, kv], dim=-1)
    qg = qg.unflatten(-1, (q_heads, 2 * head_dim if q_gate else head_dim))
    gate = qg[..., head_dim:] if q_gate else None
    return qg[..., :head_dim], k.unflatten(-1, (kv_heads, head_dim)), v, gate


def rstd_of_sums(sums, q_width, k_width, eps):
    """The q and the k rstd ([T] each, contiguous) of per-token sums of squares ``sums [T, 2]`` over ``q_width``
    and ``k_width`` elements (one elementwise op per column: no widths tensor to copy to the device)."""
    return torch.rsqrt(sums[:, 0] / q_width + eps), torch.rsqrt(sums[:, 1] / k_width + eps)


def group_rstd(q_in, k_in, rstd, whole_width, eps):
    """The per-token rstd of the q and of the k heads ([T] each) where one norm spans all of a group's heads:
    ``rstd [T, 2]`` given, or (whole_width) computed from the heads ``[T, H, D]``; else (None, None)."""
    if rstd is not None:
        return rstd[:, 0].contiguous(), rstd[:, 1].contiguous()
    if not whole_width:
        return None, None
    return tuple(torch.rsqrt(h.float().pow(2).sum((-2, -1)) / (h.shape[-2] * h.shape[-1]) + eps) for h in (q_in, k_in))


def _check_outputs_apart(qkv, head_dim, q_heads, kv_heads, q_gate, q, k, v, gate) -> None:
    """As the C++ op: outputs apart from one another and from the qkv columns they are not computed from; each may
    be exactly its own columns (in place), except q and gate with gates, whose columns interleave."""
    if not has_memory(qkv):
        return
    kv = kv_heads * head_dim
    blocks = qkv.split([q_heads * head_dim * (2 if q_gate else 1), kv, kv], dim=-1)
    block_names = ["qkv's q columns", "qkv's k columns", "qkv's v columns"]
    outs = [("q", q, 0), ("k", k, 1), ("v", v, 2), ("gate", gate, 0)]
    for i, (name, t, own) in enumerate(outs):
        if t is None:
            continue
        for other_name, other, _ in outs[i + 1 :]:
            if other is not None:
                check_apart(t, other, name, other_name)
        for b, (block, block_name) in enumerate(zip(blocks, block_names, strict=True)):
            if b == own and not (q_gate and b == 0):
                check_same_or_apart(t, block, name, block_name)
            else:
                check_apart(t, block, name, block_name)


def check_split_qkv_norm_rope(qkv, head_dim, q_heads, kv_heads, q_gate, norm, rstd, whole_width, q, k, v, gate) -> None:
    check(not whole_width or (norm and rstd is None), "whole_width needs norm=True and no rstd")
    check(head_dim > 0 and q_heads >= 0 and kv_heads >= 0, "head_dim must be > 0 and head counts >= 0")
    check(qkv.dim() == 2, f"qkv must be [tokens, hidden], got {qkv.dim()} dims")
    check_float(qkv, "qkv")
    tokens = qkv.shape[0]
    width = q_heads * head_dim * (2 if q_gate else 1) + 2 * kv_heads * head_dim
    check(
        qkv.shape[1] == width and (qkv.stride(1) == 1 or width == 1),
        f"qkv must be [{tokens}, {width}], contiguous in its last dim",
    )
    check(q_gate == (gate is not None), "gate must be given exactly when q heads hold a gate")
    _check_outputs_apart(qkv, head_dim, q_heads, kv_heads, q_gate, q, k, v, gate)
    widths = {"q": q_heads * head_dim, "k": kv_heads * head_dim, "v": kv_heads * head_dim, "gate": q_heads * head_dim}
    for name, t in (("q", q), ("k", k), ("v", v), ("gate", gate)):
        if t is None:
            continue
        check(
            tuple(t.shape) == (tokens, widths[name]),
            f"{name} must have shape [{tokens}, {widths[name]}], got {list(t.shape)}",
        )
        check_last_dim_contiguous(t, name)
        check_disjoint(t, name)
        check_dtype(t, qkv.dtype, name)
        check_same_device(t, qkv, name, "qkv")
    if rstd is not None:
        check(tuple(rstd.shape) == (tokens, 2), f"rstd must have shape [{tokens}, 2]")
        check_contiguous(rstd, "rstd")


@LIB.fake("rmsnorm")
def _(x, weight, bias, eps, gemma, quant_scale, quant_offset, out):
    check_norm(x, weight, bias, eps, quant_scale, quant_offset, out)


@LIB.fake("add_rmsnorm")
def _(x, residual, weight, bias, eps, gemma, quant_scale, quant_offset, out, added):
    check_norm(x, weight, bias, eps, quant_scale, quant_offset, out, residual, added)


@LIB.fake("fused_add_rmsnorm")
def _(x, residual, weight, eps, gemma):
    check_norm(x, weight, None, eps, None, None, x, residual)


@LIB.fake("split_sum_squares")
def _(x, width0, width1, out):
    check_split_sum_squares(x, width0, width1, out)


@LIB.fake("mrope_tables")
def _(cos_sin, section_t, section_h, section_w, interleaved, out):
    check_mrope_tables(cos_sin, section_t, section_h, section_w, interleaved, out)


@LIB.fake("silu_and_mul")
def _(x, out):
    check_glu(x, out, x.dtype)


@LIB.fake("swiglu_oai")
def _(x, alpha, limit, out):
    check_glu(x, out, x.dtype, limit=limit, alpha=alpha)


@LIB.fake("swiglu_quant")
def _(x, group_list, group_list_type, do_limit, limit, q, scale):
    check_swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale)


@LIB.fake("head_norm_rope")
def _(*args):
    head_groups(*args)


@LIB.fake("split_qkv_norm_rope")
def _(qkv, head_dim, q_heads, kv_heads, q_gate, q_weight, k_weight, q_bias, k_bias, eps, gemma, norm, rstd, whole_width,
      cos, sin, positions, rope_dim, neox, full_width, q, k, v, gate):  # fmt: skip
    check_split_qkv_norm_rope(qkv, head_dim, q_heads, kv_heads, q_gate, norm, rstd, whole_width, q, k, v, gate)
    q_in, k_in, _, _ = qkv_views(qkv, head_dim, q_heads, kv_heads, q_gate)
    rq, rk = group_rstd(q_in, k_in, rstd, whole_width, eps)  # as the device path
    tables = (cos, sin, positions, rope_dim, neox, full_width)
    check_head_norm_rope(q_in, q_weight, q_bias, eps, gemma, norm, rq, *tables, q.unflatten(-1, (q_heads, head_dim)))
    check_head_norm_rope(k_in, k_weight, k_bias, eps, gemma, norm, rk, *tables, k.unflatten(-1, (kv_heads, head_dim)))
