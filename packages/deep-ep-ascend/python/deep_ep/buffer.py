"""``deep_ep.Buffer``: DeepEP's expert-parallel dispatch and combine (normal and low-latency modes).

Every call is collective over the Buffer's group. Rows move through ``deep_ep.transport``: a shared-memory
segment when the whole group is on one machine and the Buffer has bytes to map, torch.distributed otherwise.
Events and streams are accepted for API compatibility and complete synchronously.
"""

from __future__ import annotations

import numbers
import os
from typing import NamedTuple

import torch
import torch.distributed as dist
from sgl_npu_core.checks import check_dims, fail

from . import _meta, expanded, low_latency, moe
from .events import Config, EventOverlap
from .pool import OutputPool
from .quant import quantize
from .transport import CollectiveTransport, Send, ShmTransport, node_count, pack_fields, row_bytes

_get_dispatch_layout = torch.ops.deep_ep.get_dispatch_layout.default
_reduce_rows = torch.ops.deep_ep.reduce_rows.default
_send_rows = torch.ops.deep_ep.send_rows.default
DEFAULT_TIMEOUT_S = 100.0
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class DispatchHandle(NamedTuple):
    """What combine (and a cached dispatch) needs: the first fields as DeepEP's intranode handle, then the
    send order. Rows from source s occupy ``[rank_prefix_matrix[s-1, r], rank_prefix_matrix[s, r])`` of rank r's
    receive buffer."""

    rank_prefix_matrix: torch.Tensor  # int32 [R, R]: prefix over source ranks of the tokens each sends to each
    recv_src_idx: torch.Tensor  # int32 [Nrecv]: each received row's token index on its source rank
    is_token_in_rank: torch.Tensor  # bool [N, R]
    send_token: torch.Tensor  # int64 [Nsend]: the token of each sent row, destination-major
    send_counts: list[int]  # rows sent to each rank
    recv_counts: list[int]  # rows received from each rank

    def counts(self) -> torch.Tensor:
        """int64 [R, R]: rows rank s sends to rank r."""
        prefix = self.rank_prefix_matrix.to(torch.int64)
        return torch.cat([prefix[:1], prefix[1:] - prefix[:-1]])


def _size_error(num_nvl_bytes, num_rdma_bytes, timeout_s) -> str | None:
    for name, value in (("num_nvl_bytes", num_nvl_bytes), ("num_rdma_bytes", num_rdma_bytes)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
            return f"{name} must be an int >= 0, got {value!r}"
    if not isinstance(timeout_s, numbers.Real) or isinstance(timeout_s, bool) or not timeout_s > 0:
        return f"timeout_s must be a positive number, got {timeout_s!r}"  # ('5' > 0 would raise before the gather)
    return None


def _agree_on_sizes(group, num_nvl_bytes, num_rdma_bytes, timeout_s) -> None:
    """Every rank checks its arguments and publishes them before any rank builds its transport: the ranks lay out
    one shared segment from their own sizes, and a rank that raised alone would leave the others waiting in the
    next collective. A rank with bad arguments raises its own error, the others one naming it; sizes that differ
    between ranks make every rank raise."""
    error = _size_error(num_nvl_bytes, num_rdma_bytes, timeout_s)
    mine = (error, None) if error else (None, (int(num_nvl_bytes), int(num_rdma_bytes)))
    everyone = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, mine, group=group)
    _meta.check(error is None, f"deep_ep.Buffer: {error}")
    bad = [r for r, (e, _) in enumerate(everyone) if e is not None]
    _meta.check(not bad, f"deep_ep.Buffer: rank(s) {bad} rejected their arguments")
    sizes = [s for _, s in everyone]
    other = next((r for r, s in enumerate(sizes) if s != sizes[0]), None)
    if other is not None:
        fail(f"deep_ep.Buffer: ranks disagree on (num_nvl_bytes, num_rdma_bytes): rank 0 has {sizes[0]}, "
             f"rank {other} {sizes[other]}")  # fmt: skip


class Buffer:
    """The communication buffer of one expert-parallel group (a collective constructor: every rank builds one).

    Within one machine, every rank maps one shared-memory segment holding each rank's areas: normal mode splits
    ``num_nvl_bytes`` evenly between dispatch's receive area and combine's; low-latency mode uses
    ``num_rdma_bytes`` (``get_low_latency_rdma_size_hint`` sizes it). A call whose rows do not fit raises before
    anything is written. With no bytes, or ranks on several machines (``DEEP_EP_RANKS_PER_NODE`` can force that
    on one machine), rows travel with torch.distributed instead, through private areas that grow as needed.

    Received tensors are views of this rank's areas: ``recv_x`` of ``dispatch`` stays valid until the next
    ``dispatch`` on this Buffer; low-latency receives alternate between two halves, so each stays valid until
    the second ``low_latency_dispatch`` after it (two batches may be in flight, as in DeepEP). Copy what must
    live longer.

    A peer that dies makes the others raise ``RuntimeError`` at once where its exit is visible (the same
    machine), otherwise after ``timeout_s`` (shared memory) or the group's timeout (torch.distributed).
    """

    num_sms = 20

    def __init__(self, group: dist.ProcessGroup | None = None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0,
                 low_latency_mode: bool = False, num_qps_per_rank: int = 24,
                 allow_nvlink_for_low_latency_mode: bool = True, allow_mnnvl: bool = False, use_fabric: bool = False,
                 explicitly_destroy: bool = False, enable_shrink: bool = False, comm=None,
                 timeout_s: float = DEFAULT_TIMEOUT_S):  # fmt: skip
        _meta.check(dist.is_available() and dist.is_initialized(), "Buffer needs an initialized torch.distributed")
        _agree_on_sizes(group, num_nvl_bytes, num_rdma_bytes, timeout_s)
        self.group = group
        self.rank = dist.get_rank(group)
        self.group_size = dist.get_world_size(group)
        self.num_nvl_bytes = num_nvl_bytes
        self.num_rdma_bytes = num_rdma_bytes
        self.low_latency_mode = low_latency_mode
        self.explicitly_destroy = explicitly_destroy
        forced = os.environ.get("DEEP_EP_RANKS_PER_NODE")
        self.num_nodes = node_count(group, int(forced) if forced else None)
        self.ranks_per_node = self.group_size // self.num_nodes
        if self.num_nodes == 1 and num_nvl_bytes + num_rdma_bytes > 0:
            half = num_nvl_bytes // 2
            areas = {"dispatch": half, "combine": half, "low_latency": num_rdma_bytes}
            self._transport = ShmTransport(group, areas, timeout_s)
        else:
            self._transport = CollectiveTransport(group)
        self.runtime = self._transport.kind
        self._low_latency_calls = 0
        self._dispatch_end = 0  # bytes of this rank's dispatch area that the last dispatch filled
        self._outputs = OutputPool()
        self._destroyed = False

    # ---- static helpers ------------------------------------------------------------------------------------
    @staticmethod
    def set_num_sms(new_num_sms: int) -> None:
        _meta.check(new_num_sms % 2 == 0, "the number of SMs must be even")
        Buffer.num_sms = new_num_sms

    @staticmethod
    def get_dispatch_config(num_ranks: int) -> Config:
        return Config(Buffer.num_sms)

    @staticmethod
    def get_combine_config(num_ranks: int) -> Config:
        return Config(Buffer.num_sms)

    @staticmethod
    def get_low_latency_rdma_size_hint(num_max_dispatch_tokens_per_rank: int, hidden: int, num_ranks: int,
                                       num_experts: int) -> int:  # fmt: skip
        """Bytes of ``num_rdma_bytes`` that low-latency calls of these sizes need (any dtype, any top-k)."""
        sizes = {"num_max_dispatch_tokens_per_rank": num_max_dispatch_tokens_per_rank, "hidden": hidden,
                 "num_ranks": num_ranks, "num_experts": num_experts}  # fmt: skip
        for name, n in sizes.items():
            _meta.check_count(n, name)
        return low_latency.area_bytes_hint(num_max_dispatch_tokens_per_rank, hidden, num_ranks, num_experts)

    @staticmethod
    def capture() -> EventOverlap:
        return EventOverlap()

    def destroy(self) -> None:
        _meta.check(self.explicitly_destroy, "destroy() needs Buffer(..., explicitly_destroy=True)")
        self._transport.close()
        self._outputs.clear()
        self._destroyed = True

    # ---- layout ----------------------------------------------------------------------------------------------
    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int, previous_event=None,
                            async_finish: bool = False, allocate_on_comm_stream: bool = False):  # fmt: skip
        """``(num_tokens_per_rank, num_tokens_per_rdma_rank or None, num_tokens_per_expert, is_token_in_rank,
        event)`` for ``topk_idx [N, K]`` (-1: no expert): a local computation, no communication.
        ``num_tokens_per_rdma_rank`` counts tokens per machine when the group spans several."""
        self._check_alive()
        r = self.group_size
        # before they size allocations (torch's own errors would not name them)
        _meta.check_count(num_experts, "num_experts")
        check_dims(topk_idx, 2, "topk_idx", "[tokens, topk]")
        per_rank = torch.empty(r, dtype=torch.int32, device=topk_idx.device)
        per_expert = torch.empty(num_experts, dtype=torch.int32, device=topk_idx.device)
        in_rank = torch.empty(topk_idx.shape[0], r, dtype=torch.bool, device=topk_idx.device)
        _get_dispatch_layout(topk_idx, num_experts, r, per_rank, per_expert, in_rank)
        per_rdma_rank = None
        if self.num_nodes > 1:
            nodes = in_rank.view(-1, self.num_nodes, self.ranks_per_node).any(dim=-1)
            per_rdma_rank = nodes.sum(0).to(torch.int32)
        return per_rank, per_rdma_rank, per_expert, in_rank, EventOverlap()

    # ---- normal mode ---------------------------------------------------------------------------------------------
    def dispatch(self, x, handle=None, num_tokens_per_rank=None, num_tokens_per_rdma_rank=None,
                 is_token_in_rank=None, num_tokens_per_expert=None, topk_idx=None, topk_weights=None,
                 expert_alignment: int = 1, num_worst_tokens: int = 0, config=None, previous_event=None,
                 async_finish: bool = False, allocate_on_comm_stream: bool = False, quant_mode: str | None = None,
                 round_scale: bool = False, layout: str | None = None):  # fmt: skip
        """Send each token once to every rank in its row of ``is_token_in_rank`` (the DeepEP form, below).

        ``layout="expanded"`` gives Ascend's form instead (see ``deep_ep.expanded``): ``recv_x`` has one row per
        (token, local expert), expert-major; ``recv_topk_idx`` / ``recv_topk_weights`` are each row's local expert
        and weight (``[A]``); the counts list is exact per expert (rounded up to ``expert_alignment``); ``combine``
        with its handle sums the rows weighted. A cached dispatch with that handle expands the same way.
        """
        _meta.check(layout in (None, "expanded"), f"layout must be None or 'expanded', got {layout!r}")
        if isinstance(handle, expanded.ExpandedHandle):
            recv, *_ = self._dispatch(x, handle.base, quant_mode=quant_mode, round_scale=round_scale)
            data = list(recv) if isinstance(recv, tuple) else [recv]
            rows = expanded.gather(data, handle.source_row, self._outputs)
            return self._like(recv, rows), None, None, None, handle, EventOverlap()
        result = self._dispatch(x, handle, num_tokens_per_rank, is_token_in_rank, num_tokens_per_expert, topk_idx,
                                topk_weights, expert_alignment, num_worst_tokens, quant_mode, round_scale)  # fmt: skip
        if layout is None:
            return result
        recv, recv_idx, recv_w, _, base, event = result
        _meta.check(recv_idx is not None and num_worst_tokens == 0,
                    "layout='expanded' needs topk_idx / topk_weights and no num_worst_tokens")  # fmt: skip
        data = list(recv) if isinstance(recv, tuple) else [recv]
        rows, expert, weights, counts, slots, matrix, source_row = expanded.expand(
            data, recv_idx, recv_w, self._experts_per_rank(num_tokens_per_expert), max(1, expert_alignment),
            self._outputs,
        )  # fmt: skip
        handle = expanded.ExpandedHandle(base, source_row, slots, matrix)
        return self._like(recv, rows), expert, weights, counts, handle, event

    def _dispatch(self, x, handle=None, num_tokens_per_rank=None, is_token_in_rank=None, num_tokens_per_expert=None,
                  topk_idx=None, topk_weights=None, expert_alignment=1, num_worst_tokens=0, quant_mode=None,
                  round_scale=False):  # fmt: skip
        """Send each token once to every rank in its row of ``is_token_in_rank``: the DeepEP form.

        ``x`` is ``[N, H]`` or a pre-quantized ``(data [N, H], scales [N, S] or [N])`` pair, carried unchanged;
        ``quant_mode`` ("int8", "fp8_e4m3", or one of Ascend's "pertoken_fp8_e4m3", "mx_fp8_e4m3", "mx_fp8_e5m2",
        "mx_fp4_e2m1": see ``deep_ep.quant``) quantizes ``[N, H]`` before sending, so
        ``recv_x`` is a ``(data, scales)`` pair. Returns
        ``(recv_x, recv_topk_idx, recv_topk_weights, num_recv_tokens_per_expert_list, handle, event)``: received
        rows grouped by source rank, then source token, ascending; ``recv_topk_idx`` holds local expert ids
        (-1 for experts elsewhere, whose weight is 0); the per-local-expert counts are rounded up to
        ``expert_alignment``. With ``handle`` (a cached dispatch) only ``recv_x`` is returned, the rest None.
        ``recv_x`` is a view of this rank's receive area, valid until the next dispatch.
        """
        self._check_alive()
        r, t = self.group_size, self._transport
        error, sends, data = None, None, []
        try:
            if quant_mode not in (None, "bf16"):
                _meta.check(not isinstance(x, tuple), "quant_mode quantizes a plain [N, H] x, not a (data, scales)")
                x = quantize(x, quant_mode, round_scale)
            data = list(x) if isinstance(x, tuple) else [x]
            _meta.check(len(data) in (1, 2), f"x must be a tensor or a (data, scales) pair, got {len(data)} items")
            _meta.check_sendable(data)
            if handle is not None:
                _meta.check(topk_idx is None and topk_weights is None, "a cached dispatch takes no topk_idx / weights")
                _meta.check(data[0].shape[0] == handle.is_token_in_rank.shape[0],
                            f"x must have the handle's {handle.is_token_in_rank.shape[0]} tokens")  # fmt: skip
            else:
                sends = self._plan_dispatch(data, num_tokens_per_rank, is_token_in_rank, num_tokens_per_expert,
                                            topk_idx, topk_weights)  # fmt: skip
        except Exception as e:  # any error: every rank still reaches the agreement, so none waits for the others
            error = _meta.Rejection(e)
        send_counts = sends[1] if sends is not None else torch.zeros(r, dtype=torch.int64)
        counts = self._agree(send_counts, self._signature(data, topk_idx if handle is None else None, error), error)
        if handle is not None:
            counts, send_token = handle.counts(), handle.send_token
            fields = [self._dispatch_fields(counts[:, p].sum().item(), data, None) for p in range(r)]
        else:
            send_token, _, idx_rows, weight_rows = sends
            fields = [self._dispatch_fields(counts[:, p].sum().item(), data, idx_rows) for p in range(r)]
        starts = counts.cumsum(0) - counts  # row of rank s's first row in rank p's receive area: starts[s, p]
        offsets = [0, *counts[self.rank].cumsum(0).tolist()]  # this rank's rows to p: send order [o[p], o[p+1])
        blocks = [slice(offsets[p], offsets[p + 1]) for p in range(r)]

        def send(k, src, by_token: bool):
            rows = [Send(send_token[b] if by_token else b, int(starts[self.rank, p])) for p, b in enumerate(blocks)]
            t.scatter([f[k] for f in fields], src, rows)

        for k, d in enumerate(data):
            send(k, d, by_token=True)
        n_recv = int(counts[:, self.rank].sum())
        self._dispatch_end = fields[self.rank][-1].end
        if handle is not None:
            t.finish()
            return self._like(x, self._views(fields[self.rank], data, n_recv)), None, None, None, handle, EventOverlap()

        send(len(data), send_token.to(torch.int32).unsqueeze(1), by_token=False)
        if idx_rows is not None:
            send(len(data) + 1, idx_rows, by_token=False)
            send(len(data) + 2, weight_rows, by_token=False)
        t.finish()
        mine = fields[self.rank]
        views = self._views(mine, [*data, send_token.to(torch.int32)], n_recv)
        recv, recv_src_idx = views[: len(data)], views[len(data)]
        rank_prefix_matrix = counts.cumsum(0).to(torch.int32)
        handle = DispatchHandle(rank_prefix_matrix, recv_src_idx.clone(), is_token_in_rank, send_token,
                                counts[self.rank].tolist(), counts[:, self.rank].tolist())  # fmt: skip
        recv_topk_idx = recv_topk_weights = None
        counts_list = []
        if idx_rows is not None:
            recv_topk_idx, recv_topk_weights = self._views(mine[len(data) + 1 :], [idx_rows, weight_rows], n_recv)
            experts = self._experts_per_rank(num_tokens_per_expert)
            per_expert = torch.bincount(recv_topk_idx[recv_topk_idx >= 0].long(), minlength=experts)
            align = max(1, expert_alignment)
            counts_list = [(c + align - 1) // align * align for c in per_expert.tolist()]
        if num_worst_tokens > 0:
            recv, recv_topk_idx, recv_topk_weights = self._pad_worst(recv, recv_topk_idx, recv_topk_weights,
                                                                     num_worst_tokens)  # fmt: skip
            counts_list = []
        return self._like(x, recv), recv_topk_idx, recv_topk_weights, counts_list, handle, EventOverlap()

    def combine(self, x: torch.Tensor, handle: DispatchHandle, topk_weights=None, bias=None, config=None,
                previous_event=None, async_finish: bool = False, allocate_on_comm_stream: bool = False,
                out: torch.Tensor | None = None):  # fmt: skip
        """Return every received row to its source and sum the copies of each token in fp32, in a fixed order
        (the bias first, then source ranks ascending); ``bias`` is a tensor or a pair of [N, H]. Returns
        ``(combined_x [N, H], combined_topk_weights [N, K] or None, event)``; ``out`` (an extension) receives
        ``combined_x``; without it ``combined_x`` is a new tensor or, when nothing refers to the one the previous
        call returned any more, that one again (see ``deep_ep.pool``)."""
        self._check_alive()
        if not isinstance(handle, expanded.ExpandedHandle):
            return self._combine(x, handle, topk_weights, bias, out)
        try:  # the expanded rows' weighted sums, before the ranks agree in the combine of their base handle
            _meta.check(topk_weights is None, "an expanded combine takes its weights from the handle")
            partial = expanded.partial_sums(x, handle)
        except Exception as e:  # this rank still joins its peers' agreement, and raises there
            return self._combine(None, handle.base, None, None, None, _meta.Rejection(e))
        combined, _, event = self._combine(partial, handle.base, None, bias, None)
        return (combined.to(x.dtype) if out is None else out.copy_(combined)), None, event

    def _combine(self, x, handle: DispatchHandle, topk_weights, bias, out, rejected: _meta.Rejection | None = None):
        """combine on a DispatchHandle; ``rejected``: this rank's inputs were refused before (it only joins the
        agreement, which makes every rank raise)."""
        t = self._transport
        n = handle.is_token_in_rank.shape[0]
        n_recv = sum(handle.recv_counts)
        error = None
        try:
            if rejected is not None:
                raise rejected.exception()
            _meta.check(x.dim() == 2 and x.shape[0] == n_recv, f"x must be [{n_recv}, hidden], got {list(x.shape)}")
            _meta.check(x.dtype in (torch.float32, torch.float16, torch.bfloat16), f"x must be float, got {x.dtype}")
            if topk_weights is not None:
                _meta.check(topk_weights.dim() == 2 and topk_weights.shape[0] == n_recv,
                            f"topk_weights must be [{n_recv}, topk]")  # fmt: skip
            bias_sum = self._bias_sum(bias, n, x.shape[1])
            if out is not None:
                want = f"out must be [{n}, {x.shape[1]}] {x.dtype}, contiguous in its last dim"
                _meta.check(out.shape == (n, x.shape[1]) and out.dtype == x.dtype, want)
                _meta.check_sendable([out], "out")
            _meta.check_sendable([x])
        except Exception as e:
            error = _meta.Rejection(e)
        data = [x.contiguous()] if error is None else []
        weights = topk_weights.float().contiguous() if error is None and topk_weights is not None else None
        if weights is not None:
            data.append(weights)
        # Where x lies in shared memory (-1: private). When every rank's x does, the sources read rows in place.
        at = t.locate(data[0], "dispatch") if error is None else -1
        signature = [*self._signature(data, None, error), _DTYPE_CODES.get(x.dtype, -1) if error is None else 0]
        placed = self._agree(torch.tensor([at]), signature, error)[:, 0]
        counts = handle.counts()
        if bool((placed >= 0).all()):
            return self._combine_in_place(x, handle, placed, counts, weights, bias_sum, out, topk_weights)
        combined = out if out is not None else self._outputs.empty("combine", (n, x.shape[1]), x.dtype)
        area, rows = self._return_rows(data, handle, counts)
        _reduce_rows(data[0], area[0], rows, None, bias_sum, combined)
        combined_weights = None
        if weights is not None:
            combined_weights = weights.new_empty(n, weights.shape[1])
            _reduce_rows(weights, area[1], rows, None, None, combined_weights)
            combined_weights = combined_weights.to(topk_weights.dtype)
        return combined, combined_weights, EventOverlap()

    def _sent_copies(self, handle: DispatchHandle, counts: torch.Tensor):
        """For each row this rank sent, in send order: its destination and its place among the rows sent there."""
        dest = torch.repeat_interleave(torch.arange(self.group_size), counts[self.rank])
        return dest, torch.arange(len(dest)) - (counts[self.rank].cumsum(0) - counts[self.rank])[dest]

    def _return_rows(self, data: list[torch.Tensor], handle: DispatchHandle, counts: torch.Tensor):
        """Send every received row of each tensor in ``data`` back to its source, which lays them out by
        destination rank in its combine area (its own rows are skipped: it reads those from ``data`` directly).
        Returns this rank's views of what came back and ``rows [N, R]``, where its token's copy from rank d is
        (row i < Nrecv of ``data``, else row i - Nrecv of the area; -1 where the token did not go to d)."""
        r, t, me = self.group_size, self._transport, self.rank
        returned = counts.clone()
        returned.fill_diagonal_(0)
        fields = [pack_fields("combine", [(int(returned[s].sum()), row_bytes(d)) for d in data]) for s in range(r)]
        self._check_capacity(fields, "combine", "num_nvl_bytes")
        starts = counts.cumsum(0) - counts  # starts[s, me]: first row of source s in data
        before = returned.cumsum(1) - returned  # before[s, me]: rows of earlier ranks in source s's combine area
        sends = [None if s == me else Send(slice(int(starts[s, me]), int(starts[s, me] + counts[s, me])),
                                           int(before[s, me])) for s in range(r)]  # fmt: skip
        for k, d in enumerate(data):
            t.scatter([f[k] for f in fields], d, sends)
        t.finish()
        dest, position = self._sent_copies(handle, counts)
        where = torch.where(dest == me, starts[me, me] + position, data[0].shape[0] + before[me][dest] + position)
        rows = torch.full((handle.is_token_in_rank.shape[0], r), -1, dtype=torch.int64)
        rows[handle.send_token, dest] = where
        return self._views(fields[me], data, int(returned[me].sum())), rows

    def get_next_combine_buffer(self, handle: DispatchHandle, hidden: int, dtype=torch.bfloat16) -> torch.Tensor:
        """``[Nrecv, hidden]`` for the experts' outputs: on shared memory a view at the end of this rank's dispatch
        area, so a ``combine`` of it (on every rank) copies nothing: each source reads its rows where they lie.
        Valid until the next ``dispatch``; it must not overlap that dispatch's received rows (raise
        ``num_nvl_bytes`` if it does)."""
        self._check_alive()
        _meta.check_count(hidden, "hidden")
        n_recv, size = sum(handle.recv_counts), torch.empty((), dtype=dtype).element_size()
        cap = self._transport.capacity("dispatch")
        if cap is None:
            return self._outputs.empty("combine_input", (n_recv, hidden), dtype)
        start = (cap - n_recv * hidden * size) // 64 * 64
        _meta.check(start >= self._dispatch_end, f"the combine buffer ({n_recv * hidden * size} bytes) does not fit "
                                                 f"after the received rows in num_nvl_bytes / 2 = {cap}")  # fmt: skip
        field = pack_fields("dispatch", [(n_recv, hidden * size)])[0]._replace(offset=start)
        return self._transport.field_view(field).view(dtype).view(n_recv, hidden)

    def _combine_in_place(self, x, handle, placed, counts, weights, bias_sum, out, topk_weights):
        """Combine when every rank's ``x`` lies in its dispatch area: sum straight from the peers' rows."""
        t, me, hidden = self._transport, self.rank, x.shape[1]
        n = handle.is_token_in_rank.shape[0]
        starts = counts.cumsum(0) - counts  # starts[me, d]: first row from this rank in rank d's x
        dest, position = self._sent_copies(handle, counts)
        offsets = torch.full((n, self.group_size), -1, dtype=torch.int64)
        offsets[handle.send_token, dest] = placed[dest] // x.element_size() + (starts[me][dest] + position) * hidden
        combined = out if out is not None else self._outputs.empty("combine", (n, hidden), x.dtype)
        flat = t.flat(x.dtype)
        _reduce_rows(flat, flat[:0].view(0, hidden), offsets, None, bias_sum, combined)
        combined_weights = None
        if weights is not None:  # small: returned as usual
            area, rows = self._return_rows([weights], handle, counts)
            combined_weights = weights.new_empty(n, weights.shape[1])
            _reduce_rows(weights, area[0], rows, None, None, combined_weights)
            combined_weights = combined_weights.to(topk_weights.dtype)
        t.finish()  # no rank changes its x while another still reads it
        return combined, combined_weights, EventOverlap()

    # ---- low-latency mode ----------------------------------------------------------------------------------------
    def low_latency_dispatch(self, x, topk_idx, num_max_dispatch_tokens_per_rank: int, num_experts: int,
                             cumulative_local_expert_recv_stats=None, dispatch_wait_recv_cost_stats=None,
                             use_fp8: bool = True, round_scale: bool = False, use_ue8m0: bool = False,
                             async_finish: bool = False, return_recv_hook: bool = False, topk_weights=None,
                             quant_mode: str | None = None, _precheck=None):  # fmt: skip
        """DeepEP's low-latency dispatch: see ``deep_ep.low_latency.dispatch``."""
        self._check_alive()
        half = self._low_latency_calls % 2
        self._low_latency_calls += 1
        return low_latency.dispatch(self, half, x, topk_idx, num_max_dispatch_tokens_per_rank, num_experts,
                                    cumulative_local_expert_recv_stats, use_fp8, round_scale, use_ue8m0,
                                    return_recv_hook, quant_mode, _precheck)  # fmt: skip

    def low_latency_combine(self, x, topk_idx, topk_weights, handle, use_logfmt: bool = False,
                            zero_copy: bool = False, async_finish: bool = False, return_recv_hook: bool = False,
                            out=None, combine_wait_recv_cost_stats=None):  # fmt: skip
        """DeepEP's low-latency combine: see ``deep_ep.low_latency.combine``. With ``zero_copy=True``, ``x`` is
        ``get_next_low_latency_combine_buffer(handle)`` filled in place, and on shared memory each rank reads the
        rows it needs straight from the others' buffers."""
        self._check_alive()
        return low_latency.combine(self, x, topk_idx, topk_weights, handle, return_recv_hook, out, zero_copy)

    def get_next_low_latency_combine_buffer(self, handle) -> torch.Tensor:
        """``[L, R*T, H]`` bf16 where the experts can write their outputs for a ``zero_copy`` combine; valid until
        the next low-latency combine. Across machines it is a private tensor (the combine sends its rows)."""
        self._check_alive()
        local = handle.num_experts // self.group_size
        shape = (local, self.group_size * handle.num_max_dispatch_tokens_per_rank, handle.hidden)
        if not hasattr(self._transport, "flat"):  # the returned rows land in the low-latency area: keep x out of it
            return self._outputs.empty("low_latency_combine_input", shape, torch.bfloat16)
        field = low_latency.combine_buffer_field(self, handle, handle.hidden)
        return self._transport.field_view(field).view(torch.bfloat16).view(shape)

    # ---- Ascend's fused MoE ----------------------------------------------------------------------------------------
    def fused_deep_moe(self, x, topk_idx, topk_weights, gmm1_permuted_weight, gmm1_permuted_weight_scale,
                       gmm2_weight, gmm2_weight_scale, num_max_dispatch_tokens_per_rank: int, num_experts: int,
                       quant_mode: int = 1, fuse_mode: int = moe.FuseMode.FUSED_DEEP_MOE,
                       profile_enable: bool = False):  # fmt: skip
        """Dispatch -> int8 expert FFN (SwiGLU) -> weighted combine in one call: see ``deep_ep.moe``. Returns
        ``(output [N, H] bf16, ep_recv_count int32 [L * R])``."""
        self._check_alive()
        return moe.fused_deep_moe(self, x, topk_idx, topk_weights, gmm1_permuted_weight, gmm1_permuted_weight_scale,
                                  gmm2_weight, gmm2_weight_scale, num_max_dispatch_tokens_per_rank, num_experts,
                                  quant_mode, fuse_mode)  # fmt: skip

    # ---- internals -----------------------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        _meta.check(not self._destroyed, "this Buffer was destroyed")

    def _agree(self, vec: torch.Tensor, signature: list[int], error: _meta.Rejection | None,
               equal_lengths: bool = True) -> torch.Tensor:  # fmt: skip
        """Publish ``vec``, the row sizes in ``signature`` (the same number of words on every rank) and a status
        word; returns the ``[R, len(vec)]`` matrix. A rank whose inputs were rejected raises its own error, the
        others an error naming it; ranks whose sizes or vector lengths differ all raise. Nothing has been written
        to any rank yet, and every rank raises at the same step, so none is left waiting. The fixed-length words go
        first, so every rank reads its peers' even where their vectors' lengths differ (``equal_lengths=False``:
        low-latency counts per expert, where ranks may disagree on the experts); a transport that cannot gather
        unequal lengths then agrees on those words alone first."""
        words = torch.tensor([*signature, vec.numel(), int(error is not None)])
        t = self._transport
        if equal_lengths or t.gathers_unequal_lengths:
            mat = t.gather(torch.cat([words, vec.to(torch.int64)]))
            self._check_agreed(mat[:, : words.numel()].tolist(), error)
            return mat[:, words.numel() :]
        self._check_agreed(t.gather(words).tolist(), error)
        return t.gather(vec.to(torch.int64)) if vec.numel() else torch.zeros(self.group_size, 0, dtype=torch.int64)

    def _check_agreed(self, heads: list[list[int]], error: _meta.Rejection | None) -> None:
        """Raises (on every rank alike) unless every rank's published words are those of rank 0 with status 0."""
        if error is not None:
            raise error.exception()
        bad = [r for r, head in enumerate(heads) if head[-1]]
        _meta.check(not bad, f"deep_ep: rank(s) {bad} rejected their inputs to this collective call")
        differ = [r for r, head in enumerate(heads) if head != heads[0]]
        _meta.check(not differ, f"deep_ep: ranks disagree on the call's sizes (hidden size, dtype, top-k or number "
                                f"of experts): rank 0 has {heads[0][:-1]}, rank {differ[0] if differ else 0} "
                                f"{heads[differ[0] if differ else 0][:-1]}")  # fmt: skip

    def _signature(self, data: list[torch.Tensor], topk_idx, error: _meta.Rejection | None = None) -> list[int]:
        """Row sizes every rank must agree on (ranks with different hidden sizes would misplace rows); zeros on a
        rank whose inputs were rejected (they may have no sizes to read: its peers only need its status word)."""
        if error is not None:
            return [0] * 5
        sizes = [row_bytes(d) for d in data] + [0] * (3 - len(data))
        return [len(data), *sizes, 0 if topk_idx is None else topk_idx.shape[1]]

    def _plan_dispatch(self, data, num_tokens_per_rank, is_token_in_rank, num_tokens_per_expert, topk_idx,
                       topk_weights):  # fmt: skip
        """The rows this rank sends, destination-major then token ascending: ``(send_token, counts [R], local
        topk_idx rows, masked weight rows)`` (the last two None without top-k; C++ ``send_rows``)."""
        _meta.check(
            is_token_in_rank is not None and num_tokens_per_rank is not None,
            "dispatch needs num_tokens_per_rank and is_token_in_rank (from get_dispatch_layout) or a handle",
        )
        n, r = data[0].shape[0], self.group_size
        if tuple(is_token_in_rank.shape) != (n, r):
            fail(f"is_token_in_rank must be [{n}, {r}]")
        # before its sum sizes an allocation (an int tensor of huge counts would ask for terabytes)
        if is_token_in_rank.dtype != torch.bool:
            fail(f"is_token_in_rank must be bool, got {is_token_in_rank.dtype}")
        _meta.check((topk_idx is None) == (topk_weights is None), "topk_idx and topk_weights go together")
        for d in data:
            _meta.check(d.dim() >= 1 and d.shape[0] == n, "every tensor of x must have a row per token")
        counts = is_token_in_rank.sum(0)
        _meta.check(torch.equal(counts.to(num_tokens_per_rank.dtype), num_tokens_per_rank),
                    "num_tokens_per_rank does not match is_token_in_rank")  # fmt: skip
        send_token = torch.empty(int(counts.sum()), dtype=torch.int64)
        if topk_idx is None:
            _send_rows(is_token_in_rank.contiguous(), None, None, 0, send_token, None, None)
            return send_token, counts, None, None
        _meta.check(topk_idx.shape == topk_weights.shape and topk_idx.shape[0] == n,
                    f"topk_idx and topk_weights must both be [{n}, topk]")  # fmt: skip
        experts = self._experts_per_rank(num_tokens_per_expert) * r
        idx_rows = topk_idx.new_empty(len(send_token), topk_idx.shape[1])
        weight_rows = torch.empty(len(send_token), topk_idx.shape[1])
        _send_rows(is_token_in_rank.contiguous(), topk_idx, topk_weights.float(), experts, send_token, idx_rows,
                   weight_rows)  # fmt: skip
        return send_token, counts, idx_rows, weight_rows.to(topk_weights.dtype)

    def _dispatch_fields(self, rows: int, data, idx_rows):
        """Rank p's receive area for ``rows`` rows: the data tensors, the source token index, then (with top-k)
        local expert ids and weights."""
        shapes = [(rows, row_bytes(d)) for d in data] + [(rows, 4)]
        if idx_rows is not None:
            k = idx_rows.shape[1]
            shapes += [(rows, k * idx_rows.element_size()), (rows, 4 * k)]
        fields = pack_fields("dispatch", shapes)
        self._check_capacity([fields], "dispatch", "num_nvl_bytes")
        return fields

    def _check_capacity(self, per_rank_fields, area: str, setting: str) -> None:
        cap = self._transport.capacity(area)
        need = max((f[-1].end for f in per_rank_fields if f), default=0)
        message = f"this call needs {need} bytes of a rank's {area} area, which holds {cap}: raise {setting}"
        _meta.check(cap is None or need <= cap, message)

    def _views(self, fields, like: list[torch.Tensor], rows: int) -> list[torch.Tensor]:
        """Typed views of this rank's ``fields``, one per tensor of ``like`` (same dtype and trailing shape)."""
        out = []
        for f, t in zip(fields, like, strict=False):
            v = self._transport.field_view(f)[:rows]
            out.append(v.view(t.dtype).view(rows, *t.shape[1:]))
        return out

    def _experts_per_rank(self, num_tokens_per_expert) -> int:
        _meta.check(num_tokens_per_expert is not None, "dispatch with topk_idx needs num_tokens_per_expert")
        experts = num_tokens_per_expert.numel()
        _meta.check(experts % self.group_size == 0, "the experts must divide evenly among the ranks")
        return experts // self.group_size

    @staticmethod
    def _bias_sum(bias, n: int, hidden: int):
        """fp32 sum of ``bias`` (a tensor or a pair), or None."""
        total = None
        for b in bias if isinstance(bias, tuple) else (bias,):
            if b is not None:
                _meta.check(tuple(b.shape) == (n, hidden), f"bias must be [{n}, {hidden}]")
                total = b.float() if total is None else total + b.float()
        return total

    @staticmethod
    def _pad_worst(recv, topk_idx, topk_weights, rows):
        """Exactly ``rows`` received rows: the real ones first, then padding with topk_idx -1."""
        real = recv[0].shape[0]
        _meta.check(real <= rows, f"num_worst_tokens ({rows}) is below the {real} rows received")

        def pad(t, value):
            return torch.cat([t, t.new_full((rows - real, *t.shape[1:]), value)]) if t is not None else None

        return [pad(t, 0) for t in recv], pad(topk_idx, -1), pad(topk_weights, 0)

    @staticmethod
    def _like(x, recv):
        return tuple(recv) if isinstance(x, tuple) else recv[0]
