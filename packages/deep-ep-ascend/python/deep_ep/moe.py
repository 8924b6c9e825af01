"""``Buffer.fused_deep_moe``: low-latency dispatch (int8 per token) -> per-expert int8 matmul with W13 ->
dequantize, SwiGLU, per-token int8 requantize -> int8 matmul with W2 -> dequantize -> weighted low-latency combine.

Weights are w8a8 in plain row-major layout: ``W13 [L, H, 2I]`` int8 with per-output-channel fp32 scales
``[L, 2I]`` (gate in the first I columns: ``silu(h[:, :I]) * h[:, I:]``), ``W2 [L, I, H]`` int8 with scales
``[L, H]``; the NPU's fractal (NZ) and tile-permuted weight formats do not apply on CPUs. The int8 products are
summed exactly (in fp64, which holds any int32 sum of these sizes; torch's int8 matmul is far slower on CPUs).
"""

from __future__ import annotations

import enum

import torch
from sgl_npu_core.checks import fail

from . import _meta
from .quant import quantize


class FuseMode(enum.IntEnum):
    """Ascend's two fused kernels; both run the same chain here."""

    FUSED_DEEP_MOE = 1
    DISPATCH_FFN_COMBINE = 2


_FUSE_MODES = tuple(int(m) for m in FuseMode)


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact ``a @ b`` of int8 matrices, as fp64 (each sum of int8 products is an integer well below 2^53)."""
    return a.double() @ b.double()


def expert_ffn(data, scales, w13, w13_scale, w2, w2_scale) -> torch.Tensor:
    """One expert on its int8 rows: ``[n, H]`` int8 with per-row scales -> bf16 ``[n, H]``."""
    h = (int8_matmul(data, w13) * scales.double().unsqueeze(1) * w13_scale.double()).float()
    inter = h.shape[1] // 2
    act = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
    q, s = quantize(act, "int8")
    y = int8_matmul(q, w2) * s.double().unsqueeze(1) * w2_scale.double()
    return y.to(torch.bfloat16)


def check_weights(w13, w13_scale, w2, w2_scale, local: int, hidden: int) -> None:
    _meta.check(w13.dtype == torch.int8 and w2.dtype == torch.int8, "the expert weights must be int8 (w8a8)")
    _meta.check(w13.dim() == 3 and w13.shape[0] == local and w13.shape[1] == hidden and w13.shape[2] % 2 == 0,
                f"gmm1 weight must be [{local}, {hidden}, 2I], got {list(w13.shape)}")  # fmt: skip
    inter = w13.shape[2] // 2
    _meta.check(tuple(w2.shape) == (local, inter, hidden), f"gmm2 weight must be [{local}, {inter}, {hidden}]")
    _meta.check(tuple(w13_scale.shape) == (local, 2 * inter), f"gmm1 weight scale must be [{local}, {2 * inter}]")
    _meta.check(tuple(w2_scale.shape) == (local, hidden), f"gmm2 weight scale must be [{local}, {hidden}]")


def fused_deep_moe(buf, x, topk_idx, topk_weights, w13, w13_scale, w2, w2_scale, tokens_per_rank, num_experts,
                   quant_mode, fuse_mode):  # fmt: skip
    """Returns ``(output [N, H] bf16, ep_recv_count int32 [L * R])``: the rows each local expert received from each
    source rank, expert-major."""
    local = num_experts // buf.group_size if num_experts % buf.group_size == 0 else -1

    def precheck():  # run inside the dispatch's agreement, so a rank with bad weights does not raise alone
        if local <= 0:
            fail(f"num_experts ({num_experts}) must be a positive multiple of {buf.group_size}")
        if fuse_mode not in _FUSE_MODES:
            fail(f"fuse_mode must be one of {list(_FUSE_MODES)}, got {fuse_mode!r}")
        if quant_mode not in (0, 1):  # Ascend's codes (0 BF16, 1 INT8); its op runs int8 either way, as does this one
            fail(f"quant_mode must be 0 or 1 (the activations travel as per-token int8 either way), got {quant_mode!r}")
        check_weights(w13, w13_scale, w2, w2_scale, local, x.shape[-1])

    (data, scales), recv_count, handle, _, _ = buf.low_latency_dispatch(
        x, topk_idx, tokens_per_rank, num_experts, quant_mode="int8", _precheck=precheck
    )
    out = buf._outputs.empty("fused_deep_moe", tuple(data.shape), torch.bfloat16)
    for i, n in enumerate(recv_count.tolist()):
        if n:
            out[i, :n] = expert_ffn(data[i, :n], scales[i, :n], w13[i], w13_scale[i], w2[i], w2_scale[i])
    combined, _, _ = buf.low_latency_combine(out, topk_idx, topk_weights, handle)
    ep_recv_count = (handle.layout_range & 0xFFFFFFFF).to(torch.int32).flatten()
    return combined, ep_recv_count
