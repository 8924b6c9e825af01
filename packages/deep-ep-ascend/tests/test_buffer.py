"""Buffer's normal-mode dispatch and combine across gloo processes (2, 4 and 8 ranks), over shared memory and over
torch.distributed: every rank's received rows, local expert ids, weights and counts against the reference; combine
sums the copies in a fixed order; a cached dispatch reuses the routing; num_worst_tokens pads. Each rank is this
file run as a script (see conftest.run_ranks)."""

import sys

import pytest
import torch
import torch.distributed as dist

HIDDEN, TOPK, EXPERTS_PER_RANK = 128, 4, 3
# Buffer bytes and the runtime each transport case must get ("2 nodes": DEEP_EP_RANKS_PER_NODE=2, see conftest).
NVL_BYTES = {"shm": 1 << 20, "torch.distributed": 0, "2 nodes": 1 << 20}
RUNTIME = {"shm": "shared memory", "torch.distributed": "torch.distributed", "2 nodes": "torch.distributed"}


def _inputs(rank: int, world: int):
    """Rank `rank`'s tokens (their count varies by rank), routing and weights: reproducible on every rank."""
    g = torch.Generator().manual_seed(100 + rank)
    tokens = 5 + 3 * rank
    x = torch.randn(tokens, HIDDEN, generator=g).to(torch.bfloat16)
    scores = torch.rand(tokens, EXPERTS_PER_RANK * world, generator=g)
    topk_idx = scores.topk(TOPK, dim=-1).indices
    topk_idx[0, 1] = -1  # a slot with no expert
    weights = torch.rand(tokens, TOPK, generator=g)
    return x, topk_idx, weights


def _run_rank(rank: int, world: int, init_file: str, transport: str) -> None:
    import deep_ep
    from deep_ep import reference as ref

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        buffer = deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=NVL_BYTES[transport])
        assert buffer.runtime == RUNTIME[transport], buffer.runtime
        experts = EXPERTS_PER_RANK * world
        x, topk_idx, weights = _inputs(rank, world)
        per_rank, per_rdma, per_expert, in_rank, _ = buffer.get_dispatch_layout(topk_idx, experts)
        if transport == "2 nodes":
            assert per_rdma.tolist() == in_rank.view(-1, 2, world // 2).any(-1).sum(0).tolist()
        else:
            assert per_rdma is None
        recv_x, recv_idx, recv_w, counts, handle, event = buffer.dispatch(
            x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
            topk_idx=topk_idx, topk_weights=weights, expert_alignment=4,
        )  # fmt: skip
        event.current_stream_wait()
        inputs = [_inputs(s, world) for s in range(world)]
        want_x, want_idx, want_w, sources = ref.received_rows(inputs, rank, experts)
        assert torch.equal(recv_x, want_x) and torch.equal(recv_idx, want_idx) and torch.equal(recv_w, want_w)
        assert handle.recv_src_idx.tolist() == [t for _, t in sources]
        exact = torch.bincount(want_idx[want_idx >= 0], minlength=EXPERTS_PER_RANK).tolist()
        assert counts == [(c + 3) // 4 * 4 for c in exact]

        # Experts: rank r scales its rows by r + 1; combine sums each token's copies (rank order, fp32).
        y = (recv_x.float() * (rank + 1)).to(torch.bfloat16)
        bias = torch.ones(x.shape[0], HIDDEN, dtype=torch.bfloat16)
        combined, combined_w, _ = buffer.combine(y, handle, topk_weights=recv_w, bias=bias)
        want = torch.ones(x.shape[0], HIDDEN)
        for r in range(world):
            want += in_rank[:, r : r + 1] * (x.float() * (r + 1)).to(torch.bfloat16).float()
        assert torch.equal(combined, want.to(torch.bfloat16))
        assert torch.equal(combined_w, torch.where(topk_idx >= 0, weights, 0.0))
        # Bit-identical reruns.
        rerun = buffer.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                num_tokens_per_expert=per_expert, topk_idx=topk_idx, topk_weights=weights)  # fmt: skip
        recombined = buffer.combine(y, rerun[4], bias=bias)[0]
        assert recombined is not combined, "the output pool handed out a tensor still in use"
        assert torch.equal(rerun[0], recv_x) and torch.equal(recombined, combined)

        # A cached dispatch sends another tensor the same way; a (data, scales) pair travels unchanged.
        scales = x[:, :2].float() + 1  # derived from x, so every rank knows what the others send
        (again, again_scales), *rest = buffer.dispatch((x * 2, scales), handle=handle)
        assert torch.equal(again, want_x * 2) and rest[:3] == [None, None, None]
        assert torch.equal(again_scales, want_x[:, :2].float() + 1)
        # Quantizing dispatch: the receiver gets exactly the sender's per-token quantization of each row.
        from deep_ep.quant import quantize

        for mode in ("int8", "fp8_e4m3", "pertoken_fp8_e4m3", "mx_fp8_e4m3", "mx_fp8_e5m2", "mx_fp4_e2m1"):
            (q, s), *_ = buffer.dispatch(x, handle=handle, quant_mode=mode)
            want_q, want_s = quantize(want_x, mode)
            assert q.dtype == want_q.dtype and s.dtype == want_s.dtype and q.shape == want_q.shape
            assert torch.equal(q.view(torch.uint8), want_q.view(torch.uint8))
            assert torch.equal(s.view(torch.uint8), want_s.view(torch.uint8))
        # Experts writing into get_next_combine_buffer: on shared memory the sources read the rows in place.
        staged = buffer.get_next_combine_buffer(handle, HIDDEN)
        for hidden in (-HIDDEN, 0, 2.5):  # a negative size reached torch's view() and its message
            with pytest.raises(RuntimeError, match="hidden must be an int > 0"):
                buffer.get_next_combine_buffer(handle, hidden)
        staged.copy_(y)
        in_place, in_place_w, _ = buffer.combine(staged, handle, topk_weights=recv_w, bias=bias)
        assert torch.equal(in_place, combined) and torch.equal(in_place_w, combined_w)
        # A fresh recv_x lies in shared memory too (the dispatches above have reused its area since).
        fresh = buffer.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank)
        direct = buffer.combine(fresh[0], fresh[4])[0]
        assert torch.equal(direct.float(), (x.float() * in_rank.sum(1, keepdim=True)).to(torch.bfloat16).float())

        # Ascend's expanded layout: a row per (token, local expert), expert-major; combine weighted.
        rows, experts_of, row_w, counts, ex_handle, _ = buffer.dispatch(
            x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
            topk_idx=topk_idx, topk_weights=weights, layout="expanded",
        )  # fmt: skip
        order = sorted((i, j) for j in range(len(want_x)) for i in want_idx[j].tolist() if i >= 0)
        assert experts_of.tolist() == [i for i, _ in order]
        assert torch.equal(rows, want_x[[j for _, j in order]])
        assert torch.equal(row_w, torch.stack([want_w[j, want_idx[j].tolist().index(i)] for i, j in order]))
        assert counts == torch.bincount(experts_of, minlength=EXPERTS_PER_RANK).tolist()
        combined_ex, _, _ = buffer.combine((rows.float() * (rank + 1)).to(torch.bfloat16), ex_handle)
        want_ex = torch.zeros(x.shape[0], HIDDEN)
        for r in range(world):
            on_r = (topk_idx >= 0) & (topk_idx // EXPERTS_PER_RANK == r)
            want_ex += (weights * on_r).sum(1, keepdim=True) * (x.float() * (r + 1)).to(torch.bfloat16).float()
        torch.testing.assert_close(combined_ex.float(), want_ex, rtol=1e-2, atol=1e-2)
        # Expanded rows refused on one rank (a row short): that rank still joins the agreement, so every rank raises
        # at the same step, and the next combine goes through.
        short = rows[:-1] if rank == 1 else rows
        try:
            buffer.combine(short, ex_handle)
        except RuntimeError as e:
            assert ("the expanded rows" if rank == 1 else "rank(s) [1] rejected") in str(e), e
        else:
            raise AssertionError("a short expanded x was accepted")
        assert torch.equal(buffer.combine((rows.float() * (rank + 1)).to(torch.bfloat16), ex_handle)[0], combined_ex)
        (again_rows,), *_ = buffer.dispatch((x * 2,), handle=ex_handle)
        assert torch.equal(again_rows, rows * 2)
        worst = buffer.dispatch(x, num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                                num_tokens_per_expert=per_expert, topk_idx=topk_idx, topk_weights=weights,
                                num_worst_tokens=64)  # fmt: skip
        assert worst[0].shape[0] == 64 and torch.equal(worst[0][: len(want_x)], want_x)
        assert (worst[1][len(want_x) :] == -1).all() and worst[3] == []
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    ("world", "transport"),
    [(2, "shm"), (4, "shm"), (8, "shm"), (2, "torch.distributed"), (8, "torch.distributed"), (4, "2 nodes")],
)
def test_normal_mode_across_ranks(world, transport, run_ranks):
    run_ranks(__file__, world, transport)


if __name__ == "__main__":
    _run_rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
