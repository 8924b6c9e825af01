"""Low-latency (decode) mode of ``deep_ep.Buffer``: one message per (token, expert) pair, no deduplication.

Each rank's ``low_latency`` area is cut in thirds: two receive halves that alternate between dispatch calls
(so two batches can be in flight, as in DeepEP), then combine's return area. A receive half holds, for
``L`` local experts, ``R * T`` rows each (``T`` = ``num_max_dispatch_tokens_per_rank``): the data, its scales,
the source token (``src_info``) and where combine must return the row (``token * K + k`` on the source).

Slots are deterministic: expert i's rows come from source ranks in ascending order, each source's tokens in
ascending order, so ``recv_x[i, :recv_count[i]]`` is filled and reruns are bit-identical.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from sgl_npu_core.checks import fail

from . import _meta
from .events import EventOverlap
from .quant import FP8_GROUP, quantize
from .transport import Field, Send, pack_fields, row_bytes

AGREEMENT_WORDS = 16  # room for the agreement's fixed words ahead of the counts per expert (9 here)

_reduce_rows = torch.ops.deep_ep.reduce_rows.default
_routes = torch.ops.deep_ep.low_latency_routes.default
_returns = torch.ops.deep_ep.low_latency_returns.default
_layout = torch.ops.deep_ep.get_dispatch_layout.default


class LowLatencyHandle(NamedTuple):
    """DeepEP's ``(src_info, layout_range, num_max_dispatch_tokens_per_rank, hidden, num_experts)``, then what
    combine needs here."""

    src_info: torch.Tensor  # int32 [L, R*T] (a strided view): each row's token index on its source rank
    layout_range: torch.Tensor  # int64 [L, R]: (first row << 32) | rows, per source rank
    num_max_dispatch_tokens_per_rank: int
    hidden: int
    num_experts: int
    recv_slot: torch.Tensor  # int32 [L, R*T]: token * K + k on the source rank
    recv_count: torch.Tensor  # int32 [L]
    message_row: torch.Tensor  # int64 [N, K]: the row of (token, k) in its rank's [L * R*T] layout, or -1
    topk_idx: torch.Tensor  # the routing dispatched, which combine must be given again
    combine_row: torch.Tensor  # int64 [N, K]: where combine reads (token, k) (C++ RoutesArgs::combine_row)


def _receive_fields(experts: int, tokens: int, data_bytes: list[int], start: int) -> list[Field]:
    """One receive half at byte ``start``: data (and scales), then (src_info, recv_slot) int32 pairs, ``experts *
    tokens`` rows each."""
    rows = experts * tokens
    return [f._replace(offset=f.offset + start) for f in
            pack_fields("low_latency", [(rows, b) for b in data_bytes] + [(rows, 8)])]  # fmt: skip


def area_bytes_hint(tokens: int, hidden: int, num_ranks: int, num_experts: int) -> int:
    """Three thirds, each fitting bf16 rows with fp8-sized scales for every (expert, source token) slot; combine's
    ``T * K`` returned rows fit in a third for any top-k up to the number of experts."""
    scales = 4 * ((hidden + FP8_GROUP - 1) // FP8_GROUP)
    third = _receive_fields(num_experts, tokens, [2 * hidden, scales], 0)[-1].end
    return 3 * third


def _third(buf, need: int) -> int:
    """Bytes of each third of this rank's low-latency area (fixed by ``num_rdma_bytes`` on shared memory; the
    largest need so far on private areas, so the halves never move under a live receive)."""
    cap = buf._transport.capacity("low_latency")
    if cap is None:
        buf._low_latency_third = max(getattr(buf, "_low_latency_third", 0), need)
        return buf._low_latency_third
    third = cap // 3 // 64 * 64
    _meta.check(need <= third, f"this low-latency call needs {3 * need} bytes of num_rdma_bytes, the Buffer has {cap}: "
                               "size it with Buffer.get_low_latency_rdma_size_hint")  # fmt: skip
    return third


def dispatch(buf, half, x, topk_idx, tokens_per_rank, num_experts, stats, use_fp8, round_scale, use_ue8m0,
             return_recv_hook, quant_mode, precheck=None):  # fmt: skip
    """Send each token to each of its top-k experts. ``x [N, H]`` with ``N <= num_max_dispatch_tokens_per_rank``
    (the same T on every rank); ``quant_mode`` any mode of ``deep_ep.quant.MODES``, else ``use_fp8`` picks fp8 per
    128 channels (DeepEP's default) or no quantization; ``use_ue8m0`` (with ``round_scale``) packs the fp8 scales
    as exponent bytes, four per int32.

    Returns ``(recv_x, recv_count int32 [L], handle, event, hook)``: ``recv_x`` is ``[L, R*T, H]`` or a
    ``(data [L, R*T, H], scales [L, R*T, S] or [L, R*T])`` pair, views of this rank's receive half. With
    ``return_recv_hook`` the rows are only sent; calling ``hook()`` (on every rank) completes the receive.
    ``precheck()``, when given, runs with this call's own checks: a RuntimeError from it on one rank makes every
    rank raise at the same step.
    """
    t, r, me = buf._transport, buf.group_size, buf.rank
    error, data = None, []
    counts = torch.zeros(0, dtype=torch.int64)  # what a rank whose checks fail publishes
    try:
        if precheck is not None:  # a caller's own checks, agreed on with these
            precheck()
        for name, n in (("num_experts", num_experts), ("num_max_dispatch_tokens_per_rank", tokens_per_rank)):
            _meta.check_count(n, name)
            # the agreement publishes both as int64 words, outside this try: a larger one would raise on this rank
            _meta.check(n < 2**31, f"{name} must be below 2^31, got {n}")
        _meta.check(num_experts % r == 0, f"num_experts ({num_experts}) must be a multiple of {r}")
        most = t.max_gather_words and t.max_gather_words - AGREEMENT_WORDS
        _meta.check(not most or num_experts <= most, f"num_experts must be at most {most}, got {num_experts}")
        _meta.check(x.dim() == 2 and x.shape[0] <= tokens_per_rank,
                    f"x must be [tokens <= {tokens_per_rank}, hidden], got {list(x.shape)}")  # fmt: skip
        _meta.check(topk_idx.dim() == 2 and topk_idx.shape[0] == x.shape[0] and topk_idx.shape[1] > 0,
                    f"topk_idx must be [{x.shape[0]}, topk >= 1], got {list(topk_idx.shape)}")  # fmt: skip
        per_expert = torch.empty(num_experts, dtype=torch.int32)  # also checks every id, in C++
        _layout(topk_idx, num_experts, r, torch.empty(r, dtype=torch.int32), per_expert,
                torch.empty(x.shape[0], r, dtype=torch.bool))  # fmt: skip
        mode = quant_mode if quant_mode is not None else ("fp8_e4m3" if use_fp8 else None)
        _meta.check(not use_ue8m0 or (mode == "fp8_e4m3" and round_scale), "use_ue8m0 needs fp8 with round_scale")
        # four 128-channel scales per packed int32
        if use_ue8m0 and x.shape[1] % 512:
            fail(f"use_ue8m0 needs a hidden size that is a multiple of 512, got {x.shape[1]}")
        _meta.check_sendable([x])
        q = quantize(x, mode, round_scale)
        data = list(q) if isinstance(q, tuple) else [q]
        counts = per_expert.to(torch.int64)
    except Exception as e:  # any error: every rank still reaches the agreement, so none waits for the others
        error = _meta.Rejection(e)
    signature = buf._signature(data, topk_idx, error)
    matrix = buf._agree(counts, [*signature, *((tokens_per_rank, num_experts) if error is None else (0, 0))], error,
                        equal_lengths=False)  # fmt: skip
    local, slots = num_experts // r, r * tokens_per_rank
    sizes = [row_bytes(d) for d in data]
    third = _third(buf, _receive_fields(num_experts, tokens_per_rank, sizes, 0)[-1].end)
    fields = _receive_fields(local, slots, sizes, half * third)

    # Messages ordered by (expert, token); each lands at expert e's block on its rank, after earlier sources.
    k, total = topk_idx.shape[1], int(counts.sum())
    token, dst_row = torch.empty(total, dtype=torch.int64), torch.empty(total, dtype=torch.int64)
    source = torch.empty(total, 2, dtype=torch.int32)  # src_info and recv_slot travel as one row
    message_row, combine_row = (torch.empty(x.shape[0] * k, dtype=torch.int64) for _ in range(2))
    per_rank, recv_count = torch.empty(r, dtype=torch.int64), torch.empty(local, dtype=torch.int32)
    layout_range = torch.empty(local, r, dtype=torch.int64)
    _routes(topk_idx, matrix.contiguous(), me, slots, token, source, dst_row, message_row, combine_row, per_rank,
            recv_count, layout_range)  # fmt: skip
    bounds = _prefix_sums(per_rank.tolist())
    blocks = [slice(bounds[p], bounds[p + 1]) for p in range(r)]
    for f, d in zip(fields, data, strict=False):
        t.scatter([f] * r, d, [Send(token[b], dst_rows=dst_row[b]) for b in blocks])
    t.scatter([fields[-1]] * r, source, [Send(b, dst_rows=dst_row[b]) for b in blocks])

    views = [t.field_view(f).view(d.dtype).view(local, slots, *d.shape[1:]) for f, d in zip(fields, data, strict=False)]
    source = t.field_view(fields[-1]).view(torch.int32).view(local, slots, 2)
    src_info, recv_slot = source[..., 0], source[..., 1]
    raw_scales = views[1] if use_ue8m0 else None
    if use_ue8m0:
        views[1] = torch.empty(local, slots, raw_scales.shape[-1] // 4, dtype=torch.int32)
    if stats is not None:
        stats += recv_count.to(stats.dtype)
    handle = LowLatencyHandle(src_info, layout_range, tokens_per_rank, x.shape[1], num_experts, recv_slot, recv_count,
                              message_row.view(-1, k), topk_idx, combine_row.view(-1, k))  # fmt: skip
    recv_x = tuple(views) if len(views) > 1 else views[0]

    def receive():
        t.finish()
        if raw_scales is not None:
            views[1].copy_(_pack_ue8m0(raw_scales))

    if return_recv_hook:
        return recv_x, recv_count, handle, EventOverlap(), receive
    receive()
    return recv_x, recv_count, handle, EventOverlap(), None


def _prefix_sums(counts: list[int]) -> list[int]:
    """[0, c0, c0 + c1, ...]: where each rank's block of rows starts (and the last one ends)."""
    bounds = [0]
    for c in counts:
        bounds.append(bounds[-1] + c)
    return bounds


def _pack_ue8m0(scales: torch.Tensor) -> torch.Tensor:
    """Power-of-two fp32 scales ``[..., S]`` as their exponent bytes, four per int32: ``[..., S / 4]``."""
    exponent = (scales.contiguous().view(torch.int32) >> 23).to(torch.uint8)
    return exponent.view(*scales.shape[:-1], -1, 4).view(torch.int32).squeeze(-1)


def combine_buffer_field(buf, handle: LowLatencyHandle, hidden: int) -> Field:
    """Where ``get_next_low_latency_combine_buffer`` lives: ``[L, R*T, H]`` bf16 in combine's third."""
    slots = handle.num_experts * handle.num_max_dispatch_tokens_per_rank
    third = _third(buf, slots * 2 * hidden)
    return Field("low_latency", 2 * third, slots, 2 * hidden)


def combine(buf, x, topk_idx, topk_weights, handle: LowLatencyHandle, return_recv_hook, out, zero_copy=False):
    """Return every received row to its source and sum ``topk_weights[t, k] * row(t, k)`` over k in fp32 (k
    order, so reruns are bit-identical). ``x`` is ``[L, R*T, H]`` (the experts' outputs in the dispatched rows);
    ``topk_idx`` / ``topk_weights`` are the ``[N, K]`` this rank dispatched. Returns ``(combined_x [N, H], event,
    hook)``; with ``return_recv_hook`` the rows are only sent and ``hook()`` completes ``combined_x``."""
    t, r = buf._transport, buf.group_size
    local, tokens = handle.num_experts // r, handle.num_max_dispatch_tokens_per_rank
    slots = r * tokens
    error, data = None, []
    try:
        _meta.check(x.dim() == 3 and tuple(x.shape[:2]) == (local, slots),
                    f"x must be [{local}, {slots}, hidden], got {list(x.shape)}")  # fmt: skip
        _meta.check(x.dtype in (torch.float32, torch.float16, torch.bfloat16), f"x must be float, got {x.dtype}")
        _meta.check(topk_idx is handle.topk_idx or torch.equal(topk_idx, handle.topk_idx),
                    "topk_idx must be the one dispatched with this handle")  # fmt: skip
        _meta.check(topk_weights.shape == topk_idx.shape, "topk_weights must have topk_idx's shape")
        if out is not None:
            _meta.check(out.shape == (topk_idx.shape[0], x.shape[2]) and out.dtype == x.dtype,
                        f"out must be [{topk_idx.shape[0]}, {x.shape[2]}] {x.dtype}")  # fmt: skip
        if hasattr(t, "flat"):  # shared memory: the combine buffer is in the peers' reach
            own = t.field_view(combine_buffer_field(buf, handle, x.shape[2])).data_ptr()
            _meta.check(
                not zero_copy or (x.data_ptr() == own and x.dtype == torch.bfloat16),
                "zero_copy=True needs x = get_next_low_latency_combine_buffer(handle), written in place",
            )
            _meta.check(zero_copy or x.data_ptr() != own, "x is the zero-copy combine buffer: pass zero_copy=True")
        if out is not None:
            _meta.check_sendable([out], "out")
        data = [x.reshape(local * slots, x.shape[2])]
        _meta.check_sendable(data)
    except Exception as e:
        error = _meta.Rejection(e)
    signature = [*buf._signature(data, topk_idx, error), int(zero_copy)]
    buf._agree(torch.zeros(0, dtype=torch.int64), signature, error)
    n, k, hidden = topk_idx.shape[0], topk_idx.shape[1], x.shape[2]
    if zero_copy and hasattr(t, "flat"):
        return _combine_in_place(buf, x, topk_idx, topk_weights, handle, return_recv_hook, out)
    row_bytes = hidden * x.element_size()
    third = _third(buf, max(tokens * k * row_bytes, 64))
    field = Field("low_latency", 2 * third, tokens * k, row_bytes)

    # This rank's filled rows, grouped by the source they return to, and where each lands there.
    rows, returned = torch.empty(local * slots, dtype=torch.int64), torch.empty(local * slots, dtype=torch.int64)
    per_source = torch.empty(r, dtype=torch.int64)
    _returns(handle.layout_range, handle.recv_slot, rows, returned, per_source)
    bounds = _prefix_sums(per_source.tolist())
    # Rows of this rank's own tokens stay where they are: the sum reads them from x.
    blocks = [slice(bounds[p], bounds[p + 1]) for p in range(r)]
    sends = [None if p == buf.rank else Send(rows[b], dst_rows=returned[b]) for p, b in enumerate(blocks)]
    t.scatter([field] * r, data[0], sends)

    combined = out if out is not None else buf._outputs.empty("low_latency_combine", (n, hidden), x.dtype)
    weights = topk_weights if topk_weights.dtype == torch.float32 else topk_weights.float()

    def receive():
        t.finish()
        area = t.field_view(field).view(x.dtype).view(tokens * k, hidden)
        _reduce_rows(data[0], area, handle.combine_row, weights.contiguous(), None, combined)

    if return_recv_hook:
        return combined, EventOverlap(), receive
    receive()
    return combined, EventOverlap(), None


def _combine_in_place(buf, x, topk_idx, topk_weights, handle, return_recv_hook, out):
    """Zero-copy combine on shared memory: every rank wrote its experts' outputs into its combine buffer, so each
    source sums its rows straight from the peers' buffers (the gather above was the barrier that saw them
    written); nothing is copied."""
    t, local = buf._transport, handle.num_experts // buf.group_size
    field = combine_buffer_field(buf, handle, x.shape[2])
    hidden = x.shape[2]
    base = torch.tensor([t.segment_offset(field, p) // 2 for p in range(buf.group_size)])  # in bf16 elements
    rank_of = (topk_idx.long() // local).clamp(min=0)
    offsets = torch.where(handle.message_row >= 0, base[rank_of] + handle.message_row * hidden, -1)
    n = topk_idx.shape[0]
    combined = out if out is not None else buf._outputs.empty("low_latency_combine", (n, hidden), x.dtype)
    flat = t.flat(torch.bfloat16)

    def receive():
        _reduce_rows(flat, flat[:0].view(0, hidden), offsets, topk_weights.float().contiguous(), None, combined)
        t.finish()  # no rank writes its combine buffer again while another still reads it

    if return_recv_hook:
        return combined, EventOverlap(), receive
    receive()
    return combined, EventOverlap(), None
