"""Readable PyTorch references of every sgl-npu-norm op: fp32 math, results rounded once to the dtype.

They are the specification the kernels are tested against, and the fallback on devices without a kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    xf = x.float()
    return xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)


def quantize_int8_affine(y: torch.Tensor, quant_scale: torch.Tensor, quant_offset=None) -> torch.Tensor:
    """``saturate(round_half_even(y * quant_scale + quant_offset))`` to int8 (a multiply, not a divide)."""
    y = y * quant_scale.float()
    if quant_offset is not None:
        y = y + quant_offset.float()
    return torch.round(y).clamp(-128, 127).to(torch.int8)


def rmsnorm(x, weight, eps=1e-6, *, bias=None, gemma=False, quant_scale=None, quant_offset=None):
    """``x * rsqrt(mean(x^2) + eps) * w (+ bias)`` over the last dim, ``w = weight`` (or ``1 + weight`` for
    Gemma); int8 through :func:`quantize_int8_affine` when ``quant_scale`` is given."""
    w = weight.float() + 1.0 if gemma else weight.float()
    y = _rms_normalize(x, eps) * w
    if bias is not None:
        y = y + bias.float()
    if quant_scale is not None:
        return quantize_int8_affine(y, quant_scale, quant_offset)
    return y.to(x.dtype)


def gemma_rmsnorm(x, weight, eps=1e-6):
    return rmsnorm(x, weight, eps, gemma=True)


def rmsnorm_bias(x, weight, bias, eps=1e-6, quant_scale=None, quant_offset=None):
    return rmsnorm(x, weight, eps, bias=bias, quant_scale=quant_scale, quant_offset=quant_offset)


def add_rmsnorm_bias(x, residual, weight, bias=None, eps=1e-6, quant_scale=None, quant_offset=None, *, gemma=False):
    """``added = x + residual`` (in the dtype), ``out = rmsnorm(added) (+ bias)``; returns ``(out, added)``."""
    added = x + residual
    out = rmsnorm(added, weight, eps, bias=bias, gemma=gemma, quant_scale=quant_scale, quant_offset=quant_offset)
    return out, added


def fused_add_rmsnorm(x, residual, weight, eps=1e-6, *, gemma=False):
    """Functional form of the in-place op: returns ``(new_x, new_residual)`` where ``new_residual = x +
    residual`` rounded to the dtype and ``new_x = rmsnorm(new_residual)``."""
    added = x + residual
    return rmsnorm(added, weight, eps, gemma=gemma), added


def gemma_fused_add_rmsnorm(x, residual, weight, eps=1e-6):
    return fused_add_rmsnorm(x, residual, weight, eps, gemma=True)


def silu_and_mul(x):
    """``silu(gate) * up`` with ``x = [gate | up]`` on the last dim."""
    gate, up = x.float().chunk(2, dim=-1)
    return (F.silu(gate) * up).to(x.dtype)


def swiglu_oai(x, alpha=1.702, limit=7.0):
    """GPT-OSS SwiGLU on interleaved columns ``gate = x[..., 0::2]``, ``up = x[..., 1::2]``."""
    xf = x.float()
    gate = xf[..., 0::2].clamp(max=limit)
    up = xf[..., 1::2].clamp(-limit, limit)
    return ((up + 1) * gate * torch.sigmoid(alpha * gate)).to(x.dtype)


def grouped_row_count(group_list, group_list_type: int) -> int:
    """Rows covered by ``group_list``: its sum (type 1, counts) or its last entry (type 0, cumulative)."""
    return int(group_list.sum()) if group_list_type == 1 else int(group_list[-1])


def swiglu_quant(x, group_list=None, group_list_type=1, do_limit=False, limit=7.0):
    """SwiGLU then per-row symmetric int8: ``scale = max|y| / 127``, ``q = clamp(floor(y / scale + 0.5))``.

    With ``group_list`` only the first ``total_rows`` rows are computed; the rest of ``q`` and ``scale`` is 0.
    Returns ``(q int8 [..., d], scale fp32 [...])``.
    """
    gate, up = x.float().chunk(2, dim=-1)
    act = F.silu(gate)
    if do_limit:
        act = act.clamp(max=limit)
        up = up.clamp(-limit, limit)
    y = act * up
    scale = y.abs().amax(dim=-1) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.floor(y / safe.unsqueeze(-1) + 0.5).clamp(-128, 127)
    q = torch.where((scale > 0).unsqueeze(-1), q, torch.zeros_like(q)).to(torch.int8)
    if group_list is not None:
        total = grouped_row_count(group_list, group_list_type)
        rows = torch.arange(y.reshape(-1, y.shape[-1]).shape[0], device=y.device).reshape(y.shape[:-1])
        keep = rows < total
        q = torch.where(keep.unsqueeze(-1), q, torch.zeros_like(q))
        scale = torch.where(keep, scale, torch.zeros_like(scale))
    return q, scale


# ---- QK-norm + RoPE fusions -------------------------------------------------------------------------------


def rope_neox(x, cos, sin):
    """NeoX RoPE on fp32 ``x [..., r]`` with full-width ``cos``/``sin`` [..., r]: ``x cos + rotate_half(x) sin``."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def rope_gptj(x, cos, sin):
    """GPT-J RoPE on fp32 ``x [..., r]``: each pair ``(x[2i], x[2i+1])`` rotated by ``cos[i]``, ``sin[i]``."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(-2)


def norm_rope_heads(x, cos=None, sin=None, *, neox=True, eps=None, weight=None, bias=None, gemma=False, rstd=None):
    """``x [T, H, D]``: RMSNorm per head when ``eps`` is given (``rstd [T]`` replaces the per-head statistics;
    weight/bias are [D], or [H*D] across heads), rounded to x's dtype; then RoPE on the first ``r`` dims of every
    head, the rest passed through. NeoX takes full-width ``cos``/``sin`` [T, r]; GPT-J one value per pair [T, r/2]."""
    t, h, d = x.shape
    y = x.float()
    if eps is not None:
        y = y * (torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps) if rstd is None else rstd.float().view(t, 1, 1))
        if weight is not None:
            y = y * (weight.float() + (1.0 if gemma else 0.0)).view(-1, d)
        if bias is not None:
            y = y + bias.float().view(-1, d)
        y = y.to(x.dtype).float()  # the normed head, as an unfused norm would store it
    if cos is not None:
        r = cos.shape[-1] if neox else 2 * cos.shape[-1]
        c, s = cos.float().unsqueeze(1), sin.float().unsqueeze(1)
        rotated = rope_neox(y[..., :r], c, s) if neox else rope_gptj(y[..., :r], c, s)
        y = torch.cat([rotated, y[..., r:]], dim=-1)
    return y.to(x.dtype)


def _rope_tables(cos, sin, rope_dim, neox):
    """Full-width [T, r] tables for NeoX; the first half (one value per pair) for GPT-J."""
    return (cos[:, :rope_dim], sin[:, :rope_dim]) if neox else (cos[:, : rope_dim // 2], sin[:, : rope_dim // 2])


def _cache_tables(cos_sin, neox):
    """Rows of ``[cos half | sin half]`` as the tables :func:`norm_rope_heads` takes."""
    cos, sin = cos_sin.chunk(2, dim=-1)
    return (torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)) if neox else (cos, sin)


def _heads(t, head_dim):
    return t.unflatten(-1, (t.shape[-1] // head_dim, head_dim))


def split_qkv_rmsnorm_rope(qkv, sin, cos, q_hidden_size, kv_hidden_size, head_dim, eps=None, q_weight=None,
                           k_weight=None, q_bias=None, k_bias=None, is_neox_style=True):  # fmt: skip
    """``qkv [T, q + 2 kv]`` -> ``(q, k, v)``: per-head RMSNorm (when ``eps``), then RoPE on q and k with
    per-token ``cos``/``sin`` [T, rope_dim] (GPT-J: their first half); v copied."""
    q, k, v = qkv.split([q_hidden_size, kv_hidden_size, kv_hidden_size], dim=-1)
    c, s = _rope_tables(cos, sin, sin.shape[-1], is_neox_style)
    kw = dict(neox=is_neox_style, eps=eps)
    q = norm_rope_heads(_heads(q, head_dim), c, s, weight=q_weight, bias=q_bias, **kw)
    k = norm_rope_heads(_heads(k, head_dim), c, s, weight=k_weight, bias=k_bias, **kw)
    return q.flatten(1), k.flatten(1), v.clone()


def split_qkv_rmsnorm_rope_pos_cache(qkv, positions, cos_sin_cache, q_hidden_size, kv_hidden_size, head_dim,
                                     eps=None, q_weight=None, k_weight=None, q_bias=None, k_bias=None, rope_dim=None,
                                     is_neox_style=True):  # fmt: skip
    """:func:`split_qkv_rmsnorm_rope` with cos/sin taken from ``cos_sin_cache [max_pos, rope_dim]`` rows
    (``[cos half | sin half]``) at ``positions [T]``."""
    rope_dim = cos_sin_cache.shape[-1] if rope_dim is None else rope_dim
    c, s = _cache_tables(cos_sin_cache[positions.long(), :rope_dim], is_neox_style)
    q, k, v = qkv.split([q_hidden_size, kv_hidden_size, kv_hidden_size], dim=-1)
    kw = dict(neox=is_neox_style, eps=eps)
    q = norm_rope_heads(_heads(q, head_dim), c, s, weight=q_weight, bias=q_bias, **kw)
    k = norm_rope_heads(_heads(k, head_dim), c, s, weight=k_weight, bias=k_bias, **kw)
    return q.flatten(1), k.flatten(1), v.clone()


def split_qkvgate_gemma_rmsnorm_rope(qkv, sin, cos, q_hidden_size, kv_hidden_size, head_dim, rope_dim, eps, q_weight,
                                     k_weight):  # fmt: skip
    """Qwen3-Next: ``qkv [T, 2 q + 2 kv]`` whose q part holds heads ``[q | gate]``; Gemma QK-norm, NeoX RoPE on the
    first ``rope_dim`` dims. Returns ``(q, k, v, gate)``."""
    t = qkv.shape[0]
    qg, k, v = qkv.split([2 * q_hidden_size, kv_hidden_size, kv_hidden_size], dim=-1)
    q, gate = _heads(qg, 2 * head_dim).chunk(2, dim=-1)
    c, s = cos[:, :rope_dim], sin[:, :rope_dim]
    q = norm_rope_heads(q, c, s, eps=eps, weight=q_weight, gemma=True)
    k = norm_rope_heads(_heads(k, head_dim), c, s, eps=eps, weight=k_weight, gemma=True)
    return q.reshape(t, -1), k.flatten(1), v.clone(), gate.reshape(t, -1)


def mrope_axes(mrope_section, is_interleaved, half):
    """Which position axis (0 = T, 1 = H, 2 = W) each rotary frequency ``i < half`` takes its cos/sin from."""
    t, h, w = mrope_section
    axes = []
    for i in range(half):
        if is_interleaved:
            axes.append(1 if i % 3 == 1 and i < 3 * h else 2 if i % 3 == 2 and i < 3 * w else 0)
        else:
            axes.append(0 if i < t else 1 if i < t + h else 2)
    return axes


def split_qkv_rmsnorm_mrope(qkv, q_weight, k_weight, cos_sin, num_q_heads, num_kv_heads, head_size, eps,
                            mrope_section, is_interleaved, rope_dim=None, q_bias=None, k_bias=None,
                            has_gate=False):  # fmt: skip
    """Multimodal RoPE (NeoX rotation) after per-head RMSNorm; ``cos_sin [3, T, rope_dim]`` holds the
    ``[cos half | sin half]`` rows of the T, H and W positions. Returns ``(q, k, v, gate or None)``."""
    t = qkv.shape[0]
    rope_dim = cos_sin.shape[-1] if rope_dim is None else rope_dim
    half = rope_dim // 2
    axes = torch.tensor(mrope_axes(mrope_section, is_interleaved, half), device=cos_sin.device)
    freq = torch.arange(half, device=cos_sin.device)
    tables = torch.cat([cos_sin[axes, :, freq].T, cos_sin[axes, :, freq + half].T], dim=-1)  # [T, cos | sin]
    c, s = _cache_tables(tables, True)
    q_width = num_q_heads * head_size * (2 if has_gate else 1)
    kv = num_kv_heads * head_size
    qg, k, v = qkv.split([q_width, kv, kv], dim=-1)
    q, gate = _heads(qg, 2 * head_size).chunk(2, dim=-1) if has_gate else (_heads(qg, head_size), None)
    q = norm_rope_heads(q, c, s, eps=eps, weight=q_weight, bias=q_bias)
    k = norm_rope_heads(_heads(k, head_size), c, s, eps=eps, weight=k_weight, bias=k_bias)
    return q.reshape(t, -1), k.flatten(1), v.clone(), None if gate is None else gate.reshape(t, -1)


def apply_rope_with_cos_sin_cache(positions, query, key, head_size, cos_sin_cache, is_neox=True):
    """Functional form of ``apply_rope_with_cos_sin_cache_inplace``: the rotated ``(query, key)``,
    ``[T, heads * head_size]`` each, with ``rope_dim = cos_sin_cache.shape[-1]``."""
    c, s = _cache_tables(cos_sin_cache[positions.long()], is_neox)
    q = norm_rope_heads(_heads(query, head_size), c, s, neox=is_neox)
    k = norm_rope_heads(_heads(key, head_size), c, s, neox=is_neox)
    return q.flatten(1), k.flatten(1)


def fused_rope_qk_mqa(query, key, cos_sin, rotary_dim, is_neox_style=True):
    """RoPE on ``query [T, Hq, D]`` and ``key [T, Hk, D]`` with ``cos_sin [T, rotary_dim]`` rows
    ``[cos half | sin half]``; dims beyond ``rotary_dim`` pass through."""
    c, s = _cache_tables(cos_sin[:, :rotary_dim], is_neox_style)
    return norm_rope_heads(query, c, s, neox=is_neox_style), norm_rope_heads(key, c, s, neox=is_neox_style)


def fused_split_qk_norm(qkv_a, q_a_weight, kv_a_weight, q_lora_rank, kv_lora_rank, qk_rope_dim, eps):
    """MLA a-proj split: ``(rmsnorm(q_lora) [T, q_lora], rmsnorm(kv_lora) [T, 1, kv_lora], k_pe [T, 1, rope])``,
    each norm over its whole width; k_pe is copied."""
    q, kv, pe = qkv_a.split([q_lora_rank, kv_lora_rank, qk_rope_dim], dim=-1)
    return rmsnorm(q, q_a_weight, eps), rmsnorm(kv, kv_a_weight, eps).unsqueeze(1), pe.clone().unsqueeze(1)


def split_sum_squares(x, width0, width1):
    """``[rows, 2]`` fp32: per row of ``x``, the sums of squares of columns ``[0, width0)`` and
    ``[width0, width0 + width1)``."""
    first, second = x[..., :width0].float(), x[..., width0 : width0 + width1].float()
    return torch.stack([first.pow(2).sum(-1), second.pow(2).sum(-1)], dim=-1).reshape(-1, 2)


def split_qkv_tp_rmsnorm_rope(qkv, cos, sin, q_hidden_size, kv_hidden_size, head_dim, eps, q_weight, k_weight,
                              rotary_dim, group=None):  # fmt: skip
    """RMSNorm over the full q (and k) width of all tensor-parallel ranks (the local sums of squares are
    all-reduced over ``group``; weights are this rank's [q_hidden] / [kv_hidden] shards), then NeoX RoPE on the
    first ``rotary_dim`` dims of each head with full-width ``cos``/``sin`` [T, rotary_dim]."""
    import torch.distributed as dist

    q, k, v = qkv.split([q_hidden_size, kv_hidden_size, kv_hidden_size], dim=-1)
    sums = split_sum_squares(qkv, q_hidden_size, kv_hidden_size)
    world = 1
    if group is not None or (dist.is_available() and dist.is_initialized()):
        dist.all_reduce(sums, group=group)
        world = dist.get_world_size(group)
    rstd = torch.rsqrt(sums / (torch.tensor([q_hidden_size, kv_hidden_size], device=sums.device) * world) + eps)
    c, s = cos[:, :rotary_dim], sin[:, :rotary_dim]
    q = norm_rope_heads(_heads(q, head_dim), c, s, eps=eps, weight=q_weight, rstd=rstd[:, 0])
    k = norm_rope_heads(_heads(k, head_dim), c, s, eps=eps, weight=k_weight, rstd=rstd[:, 1])
    return q.flatten(1), k.flatten(1), v.clone()


def head_norm_rope(x, weight, bias, eps, gemma, norm, rstd, cos, sin, positions, rope_dim, neox, full_width):
    """The ``torch.ops.sgl_npu_norm.head_norm_rope`` primitive (``x [T, H, W]``; returns the new heads): tables
    come from rows ``positions[t]`` (or ``t``) of ``cos``/``sin``, full width for NeoX with ``full_width``, else
    half width (NeoX repeats each half)."""
    c = s = None
    if rope_dim:
        rows = positions.long() if positions is not None else torch.arange(x.shape[0], device=x.device)
        width = rope_dim if neox and full_width else rope_dim // 2
        c, s = cos[rows, :width], sin[rows, :width]
        if neox and not full_width:
            c, s = torch.cat([c, c], -1), torch.cat([s, s], -1)
    return norm_rope_heads(
        x, c, s, neox=neox, eps=eps if norm else None, weight=weight, bias=bias, gemma=gemma, rstd=rstd
    )
