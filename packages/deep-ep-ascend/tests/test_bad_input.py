"""Malformed input on one rank, or ranks that disagree: every rank raises a clear RuntimeError at the same step,
before any row is written, and the Buffer keeps working afterwards. Each rank is this file run as a script."""

import sys

import pytest
import torch
import torch.distributed as dist

HIDDEN, EXPERTS = 64, 4


def _raises(fn, match: str) -> None:
    try:
        fn()
    except RuntimeError as e:
        assert match in str(e), f"expected {match!r} in {e}"
        return
    raise AssertionError(f"no RuntimeError (expected {match!r})")


def _run_rank(rank: int, world: int, init_file: str, transport: str) -> None:
    import deep_ep

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        nvl = 64 << 10 if transport == "shm" else 0
        rdma = deep_ep.Buffer.get_low_latency_rdma_size_hint(4, HIDDEN, world, EXPERTS) if transport == "shm" else 0
        buffer = deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=nvl, num_rdma_bytes=rdma, timeout_s=20)
        x = torch.randn(4, HIDDEN).to(torch.bfloat16)
        topk_idx = torch.tensor([[0, 1], [2, 3], [1, -1], [3, 0]])
        weights = torch.rand(4, 2)
        layout = buffer.get_dispatch_layout(topk_idx, EXPERTS)
        args = dict(num_tokens_per_rank=layout[0], is_token_in_rank=layout[3], num_tokens_per_expert=layout[2],
                    topk_idx=topk_idx, topk_weights=weights)  # fmt: skip

        # One rank's routing is wrong: it names the problem, its peers name the rank.
        bad = topk_idx.clone()
        if rank == 1:
            bad[0, 0] = EXPERTS
        own, peer = "is not an expert in [0, 4)", "rank(s) [1] rejected their inputs"
        _raises(lambda: buffer.low_latency_dispatch(x, bad, 4, EXPERTS, use_fp8=False), own if rank == 1 else peer)
        # is_token_in_rank of ints: refused before its sum sizes anything.
        _raises(lambda: buffer.dispatch(x, **{**args, "is_token_in_rank": layout[3].int()}), "must be bool")
        # Hidden sizes that differ between ranks.
        wide = torch.randn(4, HIDDEN * (1 + rank)).to(torch.bfloat16)
        _raises(lambda: buffer.dispatch(wide, **args), "ranks disagree on the call's sizes")
        # More tokens than low-latency slots; experts that do not divide among the ranks.
        _raises(lambda: buffer.low_latency_dispatch(x, topk_idx, 3, EXPERTS, use_fp8=False), "x must be [tokens <= 3")
        _raises(lambda: buffer.low_latency_dispatch(x, topk_idx, 4, world + 1, use_fp8=False), "must be a multiple")
        # Ranks that disagree on the number of experts publish counts of different lengths: every rank reads its
        # peers' sizes first (torch.distributed's gather aborted the process on the mismatch).
        experts = EXPERTS * (1 + rank)
        _raises(lambda: buffer.low_latency_dispatch(x, topk_idx, 4, experts, use_fp8=False), "ranks disagree")
        huge = 2**70 if rank == 1 else 4  # an int64 word of the agreement could not hold it
        own, peer = "num_max_dispatch_tokens_per_rank must be below 2^31", "rank(s) [1] rejected their inputs"
        _raises(lambda: buffer.low_latency_dispatch(x, topk_idx, huge, EXPERTS, use_fp8=False), own if rank else peer)
        if transport == "shm":  # more counts than a rank can publish: refused before the agreement
            many = 5000 if rank == 1 else EXPERTS
            own, peer = "num_experts must be at most 4080, got 5000", "rank(s) [1] rejected their inputs"
            _raises(lambda: buffer.low_latency_dispatch(x, topk_idx, 4, many, use_fp8=False), own if rank else peer)
        # ue8m0 packs four 128-channel scales per int32: a hidden size of 64 has none to pack.
        ue8m0 = dict(use_fp8=True, round_scale=True, use_ue8m0=True)
        _raises(lambda: buffer.low_latency_dispatch(x, topk_idx, 4, EXPERTS, **ue8m0), "multiple of 512, got 64")
        if transport == "shm":  # rows beyond the areas' capacity
            big = torch.randn(4, 8192).to(torch.bfloat16)
            _raises(lambda: buffer.dispatch(big, **args), "raise num_nvl_bytes")
        # Buffer sizes that differ between ranks, or one rank's size that is not an int: every rank raises when the
        # Buffer is built, before any transport exists.
        _raises(lambda: deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=nvl + rank * (64 << 10)), "ranks disagree")
        odd = float(nvl) if rank == 1 else nvl
        own, peer = "num_nvl_bytes must be an int >= 0", "rank(s) [1] rejected their arguments"
        _raises(lambda: deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=odd), own if rank == 1 else peer)
        # x whose rows cannot travel on one rank (strided last dim, or on the meta device, whose rows would move
        # nothing): refused before the ranks agree, so its peer does not receive rows never sent.
        peer = "rank(s) [1] rejected their inputs"
        strided = torch.stack([x, x], -1).flatten(1)[:, ::2] if rank == 1 else x
        _raises(lambda: buffer.dispatch(strided, **args), "contiguous in its last dim" if rank == 1 else peer)
        on_meta = x.to("meta") if rank == 1 else x
        _raises(lambda: buffer.dispatch(on_meta, **args), "must be a CPU tensor" if rank == 1 else peer)
        four = (x, x, x, x) if rank == 1 else x  # a longer signature than the agreement's: refused before it
        _raises(lambda: buffer.dispatch(four, **args), "(data, scales) pair" if rank == 1 else peer)
        # Arguments that used to raise torch's own errors (before the agreement, or naming nothing).
        _raises(lambda: buffer.get_dispatch_layout(topk_idx, -4), "num_experts must be an int > 0, got -4")
        _raises(lambda: buffer.get_dispatch_layout(topk_idx[0], EXPERTS), "topk_idx must be [tokens, topk]")
        no_topk = topk_idx[:, :0] if rank == 1 else topk_idx
        _raises(lambda: buffer.low_latency_dispatch(x, no_topk, 4, EXPERTS, use_fp8=False),
                "topk >= 1" if rank == 1 else "rank(s) [1] rejected their inputs")  # fmt: skip
        timeout = "5" if rank == 1 else 5.0
        named = "timeout_s must be a positive number" if rank == 1 else "rank(s) [1] rejected their arguments"
        _raises(lambda: deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=nvl, timeout_s=timeout), named)
        # Still in step: a valid exchange goes through, and a combine into a strided out on one rank is refused.
        recv_x, *_, handle, _ = buffer.dispatch(x, **args)
        strided_out = torch.empty(4, 2 * HIDDEN, dtype=x.dtype)[:, ::2] if rank == 1 else None
        _raises(lambda: buffer.combine(recv_x, handle, out=strided_out), "contiguous" if rank == 1 else peer)
        combined, _, _ = buffer.combine(recv_x, handle)
        assert torch.equal(combined.float(), x.float() * layout[3].sum(1, keepdim=True))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("transport", ["shm", "torch.distributed"])
def test_bad_input_raises_on_every_rank(transport, run_ranks):
    run_ranks(__file__, 2, transport)


if __name__ == "__main__":
    _run_rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])


def test_a_rejection_raises_its_own_type_and_message_or_a_plain_runtime_error():
    from deep_ep._meta import Rejection

    class TwoArguments(RuntimeError):
        def __init__(self, what, where):
            super().__init__(f"{what} at {where}")

    class Reworded(RuntimeError):
        def __init__(self, message):
            super().__init__(f"[compiler] {message}")

    cases = [(NotImplementedError("not here"), NotImplementedError), (RuntimeError("x must be 2-D"), RuntimeError),
             (TwoArguments("bad", "w13"), RuntimeError), (Reworded("bad"), RuntimeError)]  # fmt: skip
    for error, kind in cases:
        again = Rejection(error).exception()
        assert type(again) is kind and str(again) == str(error)
