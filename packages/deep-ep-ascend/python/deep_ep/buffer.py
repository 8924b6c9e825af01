"""``deep_ep.Buffer``: DeepEP's normal-mode expert-parallel dispatch and combine over torch.distributed.

Every call is collective over the Buffer's group. Rows travel with ``all_to_all_single`` (gloo on CPUs, the
group's backend elsewhere), as raw bytes so that any dtype (fp8 included) crosses unchanged. Events and streams
are accepted for API compatibility and complete synchronously.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist

from . import _meta
from .quant import quantize

_get_dispatch_layout = torch.ops.deep_ep.get_dispatch_layout.default
_RANKS_PER_NODE = 8  # DeepEP's NVLink domain: ranks r // 8 share a node for num_tokens_per_rdma_rank


class Config:
    """DeepEP's tuning record (SMs and queue chunk sizes), kept for API compatibility: the collectives need none."""

    def __init__(self, num_sms: int = 20, num_max_nvl_chunked_send_tokens: int = 6,
                 num_max_nvl_chunked_recv_tokens: int = 256, num_max_rdma_chunked_send_tokens: int = 6,
                 num_max_rdma_chunked_recv_tokens: int = 256):  # fmt: skip
        self.num_sms = num_sms
        self.num_max_nvl_chunked_send_tokens = num_max_nvl_chunked_send_tokens
        self.num_max_nvl_chunked_recv_tokens = num_max_nvl_chunked_recv_tokens
        self.num_max_rdma_chunked_send_tokens = num_max_rdma_chunked_send_tokens
        self.num_max_rdma_chunked_recv_tokens = num_max_rdma_chunked_recv_tokens


class EventOverlap:
    """DeepEP's event wrapper. Work here finishes before the call returns, so waiting is a no-op; the extra
    tensors are kept alive as DeepEP does."""

    def __init__(self, event=None, extra_tensors=None):
        self.event = event
        self.extra_tensors = extra_tensors

    def current_stream_wait(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.current_stream_wait()


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


def _as_rows_of_bytes(t: torch.Tensor) -> torch.Tensor:
    t = t.contiguous()
    return t.reshape(t.shape[0], -1).view(torch.uint8)


class Buffer:
    """The communication buffer of one expert-parallel group (a collective constructor: every rank builds one).

    ``num_nvl_bytes`` / ``num_rdma_bytes`` and the queue-pair, NVLink and fabric options are accepted and stored;
    the collectives allocate what each call needs. Low-latency mode is not implemented yet.

    A peer that dies makes the others' next call raise ``RuntimeError`` at once; one that never arrives, after
    the group's timeout (``init_process_group(timeout=...)``).
    """

    num_sms = 20

    def __init__(self, group: dist.ProcessGroup | None = None, num_nvl_bytes: int = 0, num_rdma_bytes: int = 0,
                 low_latency_mode: bool = False, num_qps_per_rank: int = 24,
                 allow_nvlink_for_low_latency_mode: bool = True, allow_mnnvl: bool = False, use_fabric: bool = False,
                 explicitly_destroy: bool = False, enable_shrink: bool = False, comm=None):  # fmt: skip
        _meta.check(dist.is_available() and dist.is_initialized(), "Buffer needs an initialized torch.distributed")
        self.group = group
        self.rank = dist.get_rank(group)
        self.group_size = dist.get_world_size(group)
        self.num_nvl_bytes = num_nvl_bytes
        self.num_rdma_bytes = num_rdma_bytes
        self.low_latency_mode = low_latency_mode
        self.explicitly_destroy = explicitly_destroy
        self.runtime = "torch.distributed"
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
        """DeepEP's low-latency buffer size (double-buffered send, receive and signal areas), in bytes."""
        t, e, scales = num_max_dispatch_tokens_per_rank, num_experts, hidden // 128
        msg_dispatch = 16 + max(2 * hidden, hidden + 4 * scales)
        msg_combine = 4 * scales + 2 * hidden
        send = max(t * msg_dispatch, e * t * msg_combine)
        recv = max(e * t * msg_dispatch, e * t * msg_combine)
        signal = (4 * e + 127) // 128 * 128
        return (2 * (send + recv + signal) // 128 + 1) * 128

    @staticmethod
    def capture() -> EventOverlap:
        return EventOverlap()

    def destroy(self) -> None:
        _meta.check(self.explicitly_destroy, "destroy() needs Buffer(..., explicitly_destroy=True)")
        self._destroyed = True

    # ---- layout ----------------------------------------------------------------------------------------------
    def get_dispatch_layout(self, topk_idx: torch.Tensor, num_experts: int, previous_event=None,
                            async_finish: bool = False, allocate_on_comm_stream: bool = False):  # fmt: skip
        """``(num_tokens_per_rank, num_tokens_per_rdma_rank or None, num_tokens_per_expert, is_token_in_rank,
        event)`` for ``topk_idx [N, K]`` (-1: no expert): a local computation, no communication."""
        self._check_alive()
        r = self.group_size
        per_rank = torch.empty(r, dtype=torch.int32, device=topk_idx.device)
        per_expert = torch.empty(num_experts, dtype=torch.int32, device=topk_idx.device)
        in_rank = torch.empty(topk_idx.shape[0], r, dtype=torch.bool, device=topk_idx.device)
        _get_dispatch_layout(topk_idx, num_experts, r, per_rank, per_expert, in_rank)
        per_rdma_rank = None
        if r > _RANKS_PER_NODE:
            _meta.check(r % _RANKS_PER_NODE == 0, f"more than {_RANKS_PER_NODE} ranks must fill whole nodes")
            nodes = in_rank.view(-1, r // _RANKS_PER_NODE, _RANKS_PER_NODE).any(dim=-1)
            per_rdma_rank = nodes.sum(0).to(torch.int32)
        return per_rank, per_rdma_rank, per_expert, in_rank, EventOverlap()

    # ---- normal mode ---------------------------------------------------------------------------------------------
    def dispatch(self, x, handle: DispatchHandle | None = None, num_tokens_per_rank=None,
                 num_tokens_per_rdma_rank=None, is_token_in_rank=None, num_tokens_per_expert=None, topk_idx=None,
                 topk_weights=None, expert_alignment: int = 1, num_worst_tokens: int = 0, config=None,
                 previous_event=None, async_finish: bool = False, allocate_on_comm_stream: bool = False,
                 quant_mode: str | None = None, round_scale: bool = False):  # fmt: skip
        """Send each token once to every rank in its row of ``is_token_in_rank``.

        ``x`` is ``[N, H]`` or a pre-quantized ``(data [N, H], scales [N, S])`` pair, carried unchanged;
        ``quant_mode`` "int8" or "fp8_e4m3" quantizes ``[N, H]`` before sending (see ``deep_ep.quant``), so
        ``recv_x`` is a ``(data, scales)`` pair. Returns
        ``(recv_x, recv_topk_idx, recv_topk_weights, num_recv_tokens_per_expert_list, handle, event)``: received
        rows grouped by source rank, then source token, ascending; ``recv_topk_idx`` holds local expert ids
        (-1 for experts elsewhere, whose weight is 0); the per-local-expert counts are rounded up to
        ``expert_alignment``. With ``handle`` (a cached dispatch) only ``recv_x`` is returned, the rest None.
        """
        self._check_alive()
        if quant_mode not in (None, "bf16"):
            _meta.check(not isinstance(x, tuple), "quant_mode quantizes a plain [N, H] x, not a (data, scales) pair")
            x = quantize(x, quant_mode, round_scale)
        data = x if isinstance(x, tuple) else (x,)
        if handle is not None:
            _meta.check(topk_idx is None and topk_weights is None, "a cached dispatch takes no topk_idx / topk_weights")
            recv = [self._exchange(t[handle.send_token], handle.send_counts, handle.recv_counts) for t in data]
            return self._like(x, recv), None, None, None, handle, EventOverlap()
        _meta.check(
            is_token_in_rank is not None and num_tokens_per_rank is not None,
            "dispatch needs num_tokens_per_rank and is_token_in_rank (from get_dispatch_layout) or a handle",
        )
        n, r = data[0].shape[0], self.group_size
        _meta.check(tuple(is_token_in_rank.shape) == (n, r), f"is_token_in_rank must be [{n}, {r}]")
        _meta.check((topk_idx is None) == (topk_weights is None), "topk_idx and topk_weights go together")
        for t in data[1:]:
            _meta.check(t.shape[0] == n, "the scales must have a row per token")
        # Rows to send, destination-major then token ascending (nonzero of the transposed mask walks it so).
        dest, send_token = is_token_in_rank.t().nonzero(as_tuple=True)
        send_counts = torch.bincount(dest, minlength=r)
        _meta.check(torch.equal(send_counts.to(num_tokens_per_rank.dtype), num_tokens_per_rank),
                    "num_tokens_per_rank does not match is_token_in_rank")  # fmt: skip
        counts = self._exchange_counts(send_counts)
        send_list, recv_list = counts[self.rank].tolist(), counts[:, self.rank].tolist()
        recv = [self._exchange(t[send_token], send_list, recv_list) for t in data]
        recv_src_idx = self._exchange(send_token.to(torch.int32), send_list, recv_list)
        rank_prefix_matrix = counts.cumsum(0).to(torch.int32)
        handle = DispatchHandle(rank_prefix_matrix, recv_src_idx, is_token_in_rank, send_token, send_list, recv_list)

        recv_topk_idx = recv_topk_weights = None
        counts_list = []
        if topk_idx is not None:
            experts_per_rank = self._experts_per_rank(num_tokens_per_expert, topk_idx)
            idx = topk_idx[send_token]
            local = idx - dest.unsqueeze(1) * experts_per_rank
            mine = (idx >= 0) & (local >= 0) & (local < experts_per_rank)
            recv_topk_idx = self._exchange(torch.where(mine, local, -1).to(topk_idx.dtype), send_list, recv_list)
            weights = torch.where(mine, topk_weights[send_token], 0.0).to(topk_weights.dtype)
            recv_topk_weights = self._exchange(weights, send_list, recv_list)
            per_expert = torch.bincount(recv_topk_idx[recv_topk_idx >= 0].long(), minlength=experts_per_rank)
            align = max(1, expert_alignment)
            counts_list = [(c + align - 1) // align * align for c in per_expert.tolist()]
        if num_worst_tokens > 0:
            recv, recv_topk_idx, recv_topk_weights = self._pad_worst(recv, recv_topk_idx, recv_topk_weights,
                                                                     num_worst_tokens)  # fmt: skip
            counts_list = []
        return self._like(x, recv), recv_topk_idx, recv_topk_weights, counts_list, handle, EventOverlap()

    def combine(self, x: torch.Tensor, handle: DispatchHandle, topk_weights=None, bias=None, config=None,
                previous_event=None, async_finish: bool = False, allocate_on_comm_stream: bool = False):  # fmt: skip
        """Return every received row to its source and sum the copies of each token in fp32, in a fixed order
        (the bias first, then source ranks ascending); ``bias`` is a tensor or a pair of [N, H]. Returns
        ``(combined_x [N, H], combined_topk_weights [N, K] or None, event)``."""
        self._check_alive()
        _meta.check(x.shape[0] == sum(handle.recv_counts), f"x must have the {sum(handle.recv_counts)} received rows")
        n = handle.is_token_in_rank.shape[0]
        back = self._exchange(x, handle.recv_counts, handle.send_counts)  # destination-major, as it was sent
        combined = torch.zeros(n, x.shape[1], dtype=torch.float32, device=x.device)
        for b in bias if isinstance(bias, tuple) else (bias,):
            if b is not None:
                _meta.check(tuple(b.shape) == (n, x.shape[1]), f"bias must be [{n}, {x.shape[1]}]")
                combined += b.float()
        combined.index_add_(0, handle.send_token, back.float())  # rows in rank order: a fixed summation order
        combined_weights = None
        if topk_weights is not None:
            w = self._exchange(topk_weights.float(), handle.recv_counts, handle.send_counts)
            combined_weights = torch.zeros(n, w.shape[1], dtype=torch.float32, device=x.device)
            combined_weights.index_add_(0, handle.send_token, w)
            combined_weights = combined_weights.to(topk_weights.dtype)
        return combined.to(x.dtype), combined_weights, EventOverlap()

    # ---- low-latency mode ----------------------------------------------------------------------------------------
    def low_latency_dispatch(self, *args, **kwargs):
        raise NotImplementedError("deep_ep.Buffer.low_latency_dispatch is not implemented yet")

    def low_latency_combine(self, *args, **kwargs):
        raise NotImplementedError("deep_ep.Buffer.low_latency_combine is not implemented yet")

    # ---- internals -----------------------------------------------------------------------------------------------
    def _check_alive(self) -> None:
        _meta.check(not self._destroyed, "this Buffer was destroyed")

    def _exchange_counts(self, send_counts: torch.Tensor) -> torch.Tensor:
        """The [R, R] matrix of rows rank s sends to rank j (an all_gather of each rank's counts)."""
        counts = [torch.empty_like(send_counts) for _ in range(self.group_size)]
        dist.all_gather(counts, send_counts.contiguous(), group=self.group)
        return torch.stack(counts)

    def _exchange(self, rows: torch.Tensor, send_counts: list[int], recv_counts: list[int]) -> torch.Tensor:
        """all_to_all_single of ``rows`` (send_counts[j] of them to rank j, in order) as raw bytes."""
        out = rows.new_empty((sum(recv_counts), *rows.shape[1:]))
        dist.all_to_all_single(_as_rows_of_bytes(out), _as_rows_of_bytes(rows), recv_counts, send_counts,
                               group=self.group)  # fmt: skip
        return out

    def _experts_per_rank(self, num_tokens_per_expert, topk_idx) -> int:
        _meta.check(num_tokens_per_expert is not None, "dispatch with topk_idx needs num_tokens_per_expert")
        experts = num_tokens_per_expert.numel()
        _meta.check(experts % self.group_size == 0, "the experts must divide evenly among the ranks")
        return experts // self.group_size

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
