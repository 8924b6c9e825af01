"""Shape/dtype checks of the ops and their fake impls (for torch.compile and opcheck)."""

from __future__ import annotations

import numbers

import torch
from sgl_npu_core.checks import check, check_dtype, check_tensor, fail
from sgl_npu_core.library import OpLibrary

LIB = OpLibrary("deep_ep")


class Rejection:
    """A rank's rejected inputs, kept as the error's type and message until every rank has agreed to raise. Keeping
    the exception itself in a local of the frame that caught it would make a cycle (exception -> traceback -> that
    frame -> exception) holding the Buffer, and with it the process group, until the cycle collector ran: a gloo
    group freed that late aborts the process at exit."""

    def __init__(self, error: Exception):
        self.kind, self.message = type(error), str(error)

    def exception(self) -> Exception:
        """The same type with the same message, or a plain RuntimeError where the type cannot be made so (some of
        torch's errors take other arguments, or format the message themselves)."""
        try:
            error = self.kind(self.message)
        except Exception:
            return RuntimeError(self.message)
        return error if str(error) == self.message else RuntimeError(self.message)


def is_count(n) -> bool:
    """An integer > 0 (numpy's and torch's integers included, bools not)."""
    return isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0


def check_count(n, name: str) -> None:
    if not is_count(n):
        fail(f"{name} must be an int > 0, got {n!r}")


def check_sendable(data: list, name: str = "x") -> None:
    """Tensors whose rows can travel: on the CPU (a meta tensor's rows would move nothing, silently), a dim per
    token, the last dim contiguous (rows travel as bytes). Checked before the ranks agree to move rows: a rank
    failing later would leave its peers with rows never sent."""
    for d in data:  # messages formatted only on failure: this runs on every dispatch and combine
        check_tensor(d, name)
        if d.device.type != "cpu":
            fail(f"{name} must be a CPU tensor, got one on {d.device}")
        if d.dim() < 1:
            fail(f"{name} must have a row per token, got a 0-dim tensor")
        if not (d.numel() == 0 or d.stride(-1) == 1 or d.shape[-1] == 1):
            fail(f"{name} must be contiguous in its last dim")


def check_layout(topk_idx, num_experts, num_ranks, num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank):
    check(topk_idx.dim() == 2, f"topk_idx must be [tokens, topk], got {topk_idx.dim()} dims")
    check(topk_idx.dtype in (torch.int64, torch.int32), f"topk_idx must be int64 or int32, got {topk_idx.dtype}")
    check(num_ranks > 0 and num_experts > 0 and num_experts % num_ranks == 0,
          f"num_experts ({num_experts}) must be a positive multiple of the ranks ({num_ranks})")  # fmt: skip
    for name, t, shape, dtype in (
        ("num_tokens_per_rank", num_tokens_per_rank, (num_ranks,), torch.int32),
        ("num_tokens_per_expert", num_tokens_per_expert, (num_experts,), torch.int32),
        ("is_token_in_rank", is_token_in_rank, (topk_idx.shape[0], num_ranks), torch.bool),
    ):
        check_dtype(t, dtype, name)
        check(tuple(t.shape) == shape, f"{name} must have shape {list(shape)}, got {list(t.shape)}")


@LIB.fake("get_dispatch_layout")
def _(topk_idx, num_experts, num_ranks, num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank):
    check_layout(topk_idx, num_experts, num_ranks, num_tokens_per_rank, num_tokens_per_expert, is_token_in_rank)


# The row movers write only into their arguments: nothing to describe beyond the schema.
@LIB.fake("copy_rows")
def _(src, src_rows, dst, dst_rows):
    return None


@LIB.fake("reduce_rows")
def _(a, b, rows, weights, bias, out):
    return None


@LIB.fake("shm_barrier")
def _(flags, rank, epoch, timeout_s, pids):
    return None


@LIB.fake("low_latency_routes")
def _(
    topk_idx, counts, rank, slots, token, source, dst_row, message_row, combine_row, per_rank, recv_count, layout_range
):
    return None


@LIB.fake("low_latency_returns")
def _(layout_range, recv_slot, rows, returned, per_source):
    return None


@LIB.fake("send_rows")
def _(is_token_in_rank, topk_idx, topk_weights, num_experts, send_token, idx_rows, weight_rows):
    return None


@LIB.fake("quantize_int8")
def _(x, q, scales):
    return None
