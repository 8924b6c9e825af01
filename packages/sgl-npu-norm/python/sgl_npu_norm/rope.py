"""Split-QKV + QK-norm + RoPE fusions: the per-layer attention prologue in one pass over each part of the row.

Every op is built on one primitive, ``torch.ops.sgl_npu_norm.head_norm_rope`` (per-head RMSNorm, rounding to the
dtype, RoPE over the first ``rope_dim`` dims of each head), applied to the q and k heads as strided views of the
fused row; v (and gate) are copied. Each op accepts its outputs preallocated through ``out=`` (a tuple in the
order it returns them). NeoX = rotate-half on ``[x1 | x2]``; GPT-J = pairs ``(x[2i], x[2i+1])``.
"""

from __future__ import annotations

import torch
from sgl_npu_core.checks import (
    as_int,
    check_apart,
    check_channel_param,
    check_disjoint,
    check_last_dim_contiguous,
    check_written_apart,
    fail,
    has_memory,
    last_dim,
)
from sgl_npu_core.memory import empty

from . import _meta

_head_norm_rope = torch.ops.sgl_npu_norm.head_norm_rope.default
_split_qkv_norm_rope = torch.ops.sgl_npu_norm.split_qkv_norm_rope.default
_split_sum_squares = torch.ops.sgl_npu_norm.split_sum_squares.default
_mrope_tables_op = torch.ops.sgl_npu_norm.mrope_tables.default


def _heads(t: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[T, H * head_dim] -> [T, H, head_dim] (a view)."""
    if t.shape[-1] % head_dim:
        fail(f"hidden size {t.shape[-1]} is not a multiple of {head_dim}")
    return t.unflatten(-1, (t.shape[-1] // head_dim, head_dim))


def _outputs(out, like: torch.Tensor, widths: list, names: list[str]) -> list[torch.Tensor]:
    """The preallocated outputs (checked), or new ones of like's dtype; a width ``w`` means [T, w], a tuple is
    the shape after T."""
    t = like.shape[0]
    shapes = [(t, w) if isinstance(w, int) else (t, *w) for w in widths]
    if out is None:
        return [empty(s, dtype=like.dtype, device=like.device) for s in shapes]
    if len(out) != len(shapes):
        fail(f"out must hold {len(shapes)} tensors ({', '.join(names)}), got {len(out)}")
    for o, shape, name in zip(out, shapes, names, strict=True):
        last_dim(o, f"out {name}")
        if tuple(o.shape) != shape or o.dtype != like.dtype or o.device != like.device:  # messages only on failure
            _meta.check(tuple(o.shape) == shape, f"out {name} must have shape {list(shape)}, got {list(o.shape)}")
            _meta.check_dtype(o, like.dtype, f"out {name}")
            _meta.check_same_device(o, like, f"out {name}", "x")
    return list(out)


def _check_qkv(qkv: torch.Tensor, widths: list[int]) -> None:
    last_dim(qkv, "qkv")
    if min(widths) < 0:
        fail(f"the widths of qkv's parts must be >= 0, got {widths}")
    if qkv.dim() != 2:
        fail(f"qkv must be [tokens, hidden], got {qkv.dim()} dims")
    if qkv.shape[-1] != sum(widths):
        fail(f"qkv must have {sum(widths)} columns ({widths}), got {qkv.shape[-1]}")


def _split(qkv: torch.Tensor, widths: list[int]) -> list[torch.Tensor]:
    _check_qkv(qkv, widths)
    return list(qkv.split(widths, dim=-1))


def _named(what: str, args: tuple) -> None:
    """One head_norm_rope call; an error's message starts with ``what`` (which tensors the op's x / out / x2 / out2
    are), the op's own names meaning little to the caller."""
    try:
        _head_norm_rope(*args)
    except RuntimeError as error:
        raise RuntimeError(f"{what}: {error}") from None


def _rope_args(x, out, cos, sin, positions, rope_dim, neox, full_width, *, eps=None, weight=None):
    """head_norm_rope's arguments for ``x`` into ``out`` (in place where x is None), normed when eps is given."""
    norm = eps is not None
    return (x, weight, None, eps if norm else 0.0, False, norm, None, cos, sin, positions, rope_dim, neox,
            full_width, out)  # fmt: skip


def _split_norm_rope(qkv, head_dim, q_heads, kv_heads, q_gate, weights, biases, eps, gemma, rstd, cos, sin, positions,
                     rope_dim, neox, full_width, out, whole_width=False):  # fmt: skip
    """One call of the fused op; returns its outputs (q, k, v[, gate]), allocated unless ``out`` holds them.
    ``whole_width``: one norm over all the q heads of a token (and one over its k heads), not one per head."""
    if out is None:
        widths = [q_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim] + [q_heads * head_dim] * q_gate
        out = [empty(qkv.shape[0], w, dtype=qkv.dtype, device=qkv.device) for w in widths]
    if len(out) != 3 + q_gate:
        fail(f"out must hold {3 + q_gate} tensors (q, k, v{', gate' if q_gate else ''})")
    norm = eps is not None
    _split_qkv_norm_rope(qkv, head_dim, q_heads, kv_heads, q_gate, *weights, *biases, eps if norm else 0.0, gemma,
                         norm, rstd, whole_width, cos, sin, positions, rope_dim, neox, full_width, *out[:3],
                         out[3] if q_gate else None)  # fmt: skip
    return tuple(out)


def _cache_halves(cos_sin_cache: torch.Tensor, rope_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cos and sin columns of ``cos_sin_cache``'s first ``rope_dim`` (rows ``[cos half | sin half]``): one
    chunk where that is the whole width (~1 µs less than two slices, at decode sizes a tenth of the call)."""
    if rope_dim == cos_sin_cache.shape[-1] and rope_dim % 2 == 0:
        return cos_sin_cache.chunk(2, -1)
    return cos_sin_cache[:, : rope_dim // 2], cos_sin_cache[:, rope_dim // 2 : rope_dim]


def _heads_of(head_dim: int, *hidden: int) -> list[int]:
    # The messages are built only on failure: at decode sizes formatting them took ~5 % of a call.
    if head_dim <= 0:
        fail(f"head_dim must be > 0, got {head_dim}")
    for h in hidden:
        if h % head_dim:
            fail(f"hidden size {h} is not a multiple of head_dim {head_dim}")
    return [h // head_dim for h in hidden]


def split_qkv_rmsnorm_rope(qkv, sin, cos, q_hidden_size, kv_hidden_size, head_dim, eps=None, q_weight=None,
                           k_weight=None, q_bias=None, k_bias=None, is_neox_style=True, out=None):  # fmt: skip
    """``qkv [T, q + 2 kv]`` -> ``(q [T, q], k [T, kv], v [T, kv])``: per-head RMSNorm over ``head_dim`` when
    ``eps`` is given (weights/biases [head_dim]), then RoPE on the first ``rope_dim = sin.shape[-1]`` dims of each
    q and k head. ``sin``/``cos`` [T, rope_dim] are gathered per token; GPT-J uses their first half."""
    q_heads, kv_heads = _heads_of(head_dim, q_hidden_size, kv_hidden_size)
    return _split_norm_rope(qkv, head_dim, q_heads, kv_heads, False, (q_weight, k_weight), (q_bias, k_bias), eps,
                            False, None, cos, sin, None, last_dim(sin, "sin"), is_neox_style, True, out)  # fmt: skip


def split_qkv_rmsnorm_rope_pos_cache(qkv, positions, cos_sin_cache, q_hidden_size, kv_hidden_size, head_dim,
                                     eps=None, q_weight=None, k_weight=None, q_bias=None, k_bias=None, rope_dim=None,
                                     is_neox_style=True, out=None):  # fmt: skip
    """:func:`split_qkv_rmsnorm_rope` with cos/sin gathered inside from ``cos_sin_cache [max_pos, rope_dim]``
    (rows ``[cos half | sin half]``) at ``positions [T]``; positions outside the cache raise."""
    q_heads, kv_heads = _heads_of(head_dim, q_hidden_size, kv_hidden_size)
    width = last_dim(cos_sin_cache, "cos_sin_cache")
    rope_dim = width if rope_dim is None else rope_dim
    if not 0 < rope_dim <= width:
        fail(f"rope_dim must be in (0, {width}]")
    cos, sin = _cache_halves(cos_sin_cache, rope_dim)
    return _split_norm_rope(qkv, head_dim, q_heads, kv_heads, False, (q_weight, k_weight), (q_bias, k_bias), eps,
                            False, None, cos, sin, positions, rope_dim, is_neox_style, False, out)  # fmt: skip


def split_qkvgate_gemma_rmsnorm_rope(qkv, sin, cos, q_hidden_size, kv_hidden_size, head_dim, rope_dim, eps,
                                     q_weight, k_weight, out=None):  # fmt: skip
    """Qwen3-Next: ``qkv [T, 2 q + 2 kv]`` with q heads stored ``[q | gate]``; Gemma QK-norm and NeoX RoPE on the
    first ``rope_dim`` dims (``sin``/``cos`` [T, >= rope_dim]). Returns ``(q, k, v, gate)``."""
    q_heads, kv_heads = _heads_of(head_dim, q_hidden_size, kv_hidden_size)
    return _split_norm_rope(qkv, head_dim, q_heads, kv_heads, True, (q_weight, k_weight), (None, None), eps, True,
                            None, cos, sin, None, rope_dim, True, True, out)  # fmt: skip


def _mrope_tables(cos_sin, mrope_section, is_interleaved, rope_dim):
    """Per-token cos and sin tables, ``[T, rope_dim / 2]`` views of one ``[T, cos | sin]`` tensor: frequency i from
    the position row its section names (see ``reference.mrope_axes``), in one op call (built from torch calls, a
    clone and two strided copies, they took 23 of the op's 36 µs at one token)."""
    table = empty(cos_sin.shape[1], rope_dim, dtype=cos_sin.dtype, device=cos_sin.device)
    _mrope_tables_op(cos_sin, *mrope_section, bool(is_interleaved), table)
    return table[:, : rope_dim // 2], table[:, rope_dim // 2 :]


def split_qkv_rmsnorm_mrope(qkv, q_weight, k_weight, cos_sin, num_q_heads, num_kv_heads, head_size, eps,
                            mrope_section, is_interleaved, rope_dim=None, q_bias=None, k_bias=None, has_gate=False,
                            out=None):  # fmt: skip
    """Multimodal RoPE (NeoX rotation) after per-head RMSNorm. ``cos_sin [3, T, rope_dim]`` holds the
    ``[cos half | sin half]`` rows of the T, H, W positions; rotary frequency ``i`` takes the axis chosen by
    ``mrope_section = [t, h, w]`` (sum ``rope_dim / 2``; contiguous or interleaved sections). With ``has_gate``
    q heads are stored ``[q | gate]``. Returns ``(q, k, v, gate or None)``."""
    rope_dim = last_dim(cos_sin, "cos_sin") if rope_dim is None else rope_dim
    _meta.check(cos_sin.dim() == 3 and cos_sin.shape[0] == 3, "cos_sin must be [3, tokens, rope_dim]")
    _meta.check(
        0 < rope_dim <= cos_sin.shape[-1] and rope_dim % 2 == 0,
        "rope_dim must be even and at most the width of cos_sin",
    )
    try:
        sections = [as_int(n, "mrope_section") for n in mrope_section]
    except TypeError:
        sections = None
    if not (sections and len(sections) == 3 and min(sections) >= 0 and sum(sections) == rope_dim // 2):
        fail(f"mrope_section must be 3 ints >= 0 summing to rope_dim / 2 = {rope_dim // 2}, got {mrope_section!r}")
    cos, sin = _mrope_tables(cos_sin, sections, is_interleaved, rope_dim)
    outs = _split_norm_rope(qkv, head_size, num_q_heads, num_kv_heads, has_gate, (q_weight, k_weight),
                            (q_bias, k_bias), eps, False, None, cos, sin, None, rope_dim, True, False, out)  # fmt: skip
    return outs if has_gate else (*outs, None)


def apply_rope_with_cos_sin_cache_inplace(positions, query, key, head_size, cos_sin_cache, is_neox=True) -> None:
    """In place on ``query [T, Hq * head_size]`` and ``key [T, Hk * head_size]``: RoPE with cos/sin from
    ``cos_sin_cache [max_pos, rope_dim]`` rows (``[cos half | sin half]``) at ``positions``; dims beyond
    ``rope_dim`` of each head pass through (the sgl-kernel / flashinfer entry point)."""
    rope_dim = last_dim(cos_sin_cache, "cos_sin_cache")
    cos, sin = _cache_halves(cos_sin_cache, rope_dim)
    q_heads, k_heads = _heads_of(head_size, last_dim(query, "query"), last_dim(key, "key"))
    both = _adjacent_heads(query, key, head_size, q_heads + k_heads)
    if both is not None:
        _head_norm_rope(*_rope_args(None, both, cos, sin, positions, rope_dim, is_neox, False))
        return
    # Two head groups of one call: both checked before either is written (query and key apart included).
    if query.dim() != 2 or key.dim() != 2:
        fail(f"query and key must be [tokens, heads * head_size], got {query.dim()} and {key.dim()} dims")
    args = _rope_args(None, _heads(query, head_size), cos, sin, positions, rope_dim, is_neox, False)
    _named("query and key (out: query, out2: key)", (*args, None, _heads(key, head_size)))


def _adjacent_heads(query, key, head_size, heads):
    """query's and key's heads as one [T, heads, head_size] view where key's columns follow query's in the same
    rows (q and k split from one qkv row, as a model's attention does), else None. One call then rotates both:
    at decode sizes most of a call is its dispatch (Qwen3-8B bf16, T = 1: 22.1 -> 14.3 µs; T = 16: 64 -> 33 µs)."""
    if not has_memory(query, key) or query.dtype != key.dtype:
        return None
    if query._base is None or key._base is not query._base:  # views of one tensor, so one storage holds both
        return None
    if query.dim() != 2 or key.dim() != 2 or query.shape[0] != key.shape[0] or query.stride(-1) != 1:
        return None
    if key.stride() != query.stride() or key.data_ptr() != query.data_ptr() + query.shape[-1] * query.element_size():
        return None
    return query.as_strided((query.shape[0], heads, head_size), (query.stride(0), head_size, 1))


def fused_rope_qk_mqa(query, key, cos_sin, rotary_dim, is_neox_style=True, out=None):
    """RoPE on ``query [T, Hq, D]`` and ``key [T, Hk, D]`` with ``cos_sin [T, >= rotary_dim]`` rows
    ``[cos half | sin half]``; dims beyond ``rotary_dim`` pass through. Returns ``(q_out, k_out)``."""
    width = last_dim(cos_sin, "cos_sin")
    if not 0 < rotary_dim <= width or cos_sin.dim() != 2:
        fail(f"cos_sin must be [tokens, >= rotary_dim] and rotary_dim in (0, {width}], got {list(cos_sin.shape)}")
    cos, sin = cos_sin[:, : rotary_dim // 2], cos_sin[:, rotary_dim // 2 : rotary_dim]
    last_dim(query, "query")
    last_dim(key, "key")
    if query.dim() != 3 or key.dim() != 3:
        fail("query and key must be [tokens, heads, head_dim]")
    outs = _outputs(out, query, [tuple(query.shape[1:]), tuple(key.shape[1:])], ["q_out", "k_out"])
    args = _rope_args(query, outs[0], cos, sin, None, rotary_dim, is_neox_style, False)
    _named("query and key (x: query, out: q_out, x2: key, out2: k_out)", (*args, key, outs[1]))  # both checked
    return tuple(outs)


def fused_split_qk_norm(qkv_a, q_a_weight, kv_a_weight, q_lora_rank, kv_lora_rank, qk_rope_dim, eps, out=None):
    """MLA a-proj split of ``qkv_a [T, q_lora + kv_lora + rope]``: ``(q_lora [T, q_lora], k_nope [T, 1, kv_lora],
    k_pe [T, 1, rope])`` with RMSNorm over the whole q_lora (and kv_lora) width; k_pe is copied."""
    if q_lora_rank <= 0 or kv_lora_rank <= 0:
        fail(f"q_lora_rank and kv_lora_rank must be > 0, got {q_lora_rank} and {kv_lora_rank}")
    q_in, kv_in, pe_in = _split(qkv_a, [q_lora_rank, kv_lora_rank, qk_rope_dim])
    widths = [q_lora_rank, (1, kv_lora_rank), (1, qk_rope_dim)]
    q, k_nope, k_pe = _outputs(out, qkv_a, widths, ["q_lora", "k_nope", "k_pe"])
    # What the second call could refuse (its weight, k_nope's layout), before the first writes q_lora; and outputs
    # over what a later step reads (the calls check each output against its own input only).
    check_channel_param(kv_a_weight, kv_lora_rank, qkv_a, "kv_a_weight")
    check_last_dim_contiguous(k_nope, "k_nope")
    check_disjoint(k_nope, "k_nope")
    check_written_apart([("q_lora", q), ("k_nope", k_nope), ("k_pe", k_pe)], [("qkv_a's rope columns", pe_in)])
    check_apart(q, kv_in, "q_lora", "qkv_a's kv columns")
    norm_only = (None, None, None, 0, True, False)
    _named("q_lora (x: qkv_a's q columns, weight: q_a_weight)",
           _rope_args(q_in.unsqueeze(1), q.unsqueeze(1), *norm_only, eps=eps, weight=q_a_weight))  # fmt: skip
    _named("k_nope (x: qkv_a's kv columns, weight: kv_a_weight)",
           _rope_args(kv_in.unsqueeze(1), k_nope, *norm_only, eps=eps, weight=kv_a_weight))  # fmt: skip
    k_pe.copy_(pe_in.unsqueeze(1))
    return q, k_nope, k_pe


def split_qkv_tp_rmsnorm_rope(qkv, cos, sin, q_hidden_size, kv_hidden_size, head_dim, eps, q_weight, k_weight,
                              rotary_dim, group=None, out=None):  # fmt: skip
    """RMSNorm over the full q (and k) width across tensor-parallel ranks, then NeoX RoPE on the first
    ``rotary_dim`` dims of each head (``cos``/``sin`` [T, rotary_dim], full width). The local sums of squares are
    all-reduced over ``group`` with torch.distributed (no process group: this rank alone); ``q_weight`` /
    ``k_weight`` are this rank's [q_hidden] / [kv_hidden] shards. A rank that refuses its qkv still joins the
    all-reduce and then raises; its peers raise too (CPU tensors) or get NaN q and k (on a device, where reading
    the peers' verdict would cost a host sync), instead of waiting for the group's timeout."""
    import torch.distributed as dist

    if eps is None:
        fail("eps must be given: this op always norms")
    distributed = group is not None or (dist.is_available() and dist.is_initialized())
    world = dist.get_world_size(group) if distributed else 1
    if world == 1:  # the statistics in the same pass (a separate pass over q and k cost ~40 % more)
        rstd = None
        q_heads, kv_heads = _heads_of(head_dim, q_hidden_size, kv_hidden_size)
        _check_qkv(qkv, [q_hidden_size, kv_hidden_size, kv_hidden_size])
    else:
        sums = _all_reduced_sums(qkv, cos, head_dim, q_hidden_size, kv_hidden_size, group)
        q_heads, kv_heads = _heads_of(head_dim, q_hidden_size, kv_hidden_size)  # checked in the all-reduce step
        rstd = torch.stack(_meta.rstd_of_sums(sums, q_hidden_size * world, kv_hidden_size * world, eps), dim=-1)
    args = (qkv, head_dim, q_heads, kv_heads, False, (q_weight, k_weight), (None, None), eps, False, rstd)
    return _split_norm_rope(*args, cos, sin, None, rotary_dim, True, True, out, whole_width=rstd is None)


def _all_reduced_sums(qkv, cos, head_dim, q_hidden_size, kv_hidden_size, group):
    """Each token's sums of squares of q and of k [T, 2], summed over the group's ranks. The all-reduced buffer
    ends with a count of the ranks that refused their inputs, so each rank joins the collective even then; its
    length comes from qkv's tokens, or cos's where qkv has no token dim (ranks whose token counts differ cannot
    agree on a length: the collective fails on every rank)."""
    import torch.distributed as dist

    like = qkv if isinstance(qkv, torch.Tensor) and qkv.dim() == 2 else cos
    rows = like.shape[0] if isinstance(like, torch.Tensor) and like.dim() else 0
    stats = torch.zeros(2 * rows + 1, dtype=torch.float32, device=like.device if rows else None)
    sums, refusals = stats[:-1].view(rows, 2), stats[-1:]
    refused = None
    try:
        _heads_of(head_dim, q_hidden_size, kv_hidden_size)
        _check_qkv(qkv, [q_hidden_size, kv_hidden_size, kv_hidden_size])
        _split_sum_squares(qkv, q_hidden_size, kv_hidden_size, sums)  # one pass, where torch took ~15x the fused op
    except Exception as error:  # any error: this rank still joins the all-reduce
        refused = error
        refusals.fill_(1)
    dist.all_reduce(stats, group=group)
    if refused is not None:
        try:
            raise refused
        finally:
            refused = None  # no frame <-> traceback cycle keeping the inputs alive
    if stats.device.type == "cpu":
        if refusals.item():
            fail("split_qkv_tp_rmsnorm_rope: another rank of the group refused its inputs")
        return sums
    return torch.where(refusals > 0, torch.nan, sums)
