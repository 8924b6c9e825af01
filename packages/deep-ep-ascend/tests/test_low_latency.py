"""Low-latency dispatch and combine across gloo processes, over shared memory and over torch.distributed: every
slot's row, source token and count against the reference (bf16 exact; int8 and fp8 equal to the sender's
quantization), the weighted combine, bit-identical reruns, the receive hook and the alternating halves. Each rank
is this file run as a script (see conftest.run_ranks)."""

import sys

import pytest
import torch
import torch.distributed as dist

HIDDEN, TOPK, EXPERTS_PER_RANK, MAX_TOKENS = 256, 3, 3, 6


def _inputs(rank: int, world: int):
    """Rank-dependent tokens whose last column holds the token index; some slots -1; rank 1 sends no tokens."""
    g = torch.Generator().manual_seed(200 + rank)
    tokens = 0 if rank == 1 else MAX_TOKENS - rank % 2
    x = (torch.randn(tokens, HIDDEN, generator=g) + rank).to(torch.bfloat16)
    x[:, -1] = torch.arange(tokens)
    experts = EXPERTS_PER_RANK * world
    topk_idx = torch.rand(tokens, experts, generator=g).topk(TOPK, dim=-1).indices
    topk_idx[::3, 1] = -1
    weights = torch.rand(tokens, TOPK, generator=g)
    return x, topk_idx, weights


def _run_rank(rank: int, world: int, init_file: str, transport: str) -> None:
    import deep_ep
    from deep_ep import reference as ref
    from deep_ep.quant import quantize

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        experts = EXPERTS_PER_RANK * world
        hint = deep_ep.Buffer.get_low_latency_rdma_size_hint(MAX_TOKENS, HIDDEN, world, experts)
        buffer = deep_ep.Buffer(dist.group.WORLD, num_rdma_bytes=hint if transport == "shm" else 0,
                                low_latency_mode=True)  # fmt: skip
        assert buffer.runtime == ("shared memory" if transport == "shm" else "torch.distributed")
        x, topk_idx, weights = _inputs(rank, world)
        inputs = [_inputs(s, world) for s in range(world)]
        want = ref.low_latency_received([i[1] for i in inputs], rank, experts)
        stats = torch.zeros(EXPERTS_PER_RANK, dtype=torch.int32)

        for mode, use_fp8 in ((None, False), ("int8", False), (None, True), ("mx_fp4_e2m1", False)):
            recv, count, handle, _, hook = buffer.low_latency_dispatch(
                x, topk_idx, MAX_TOKENS, experts, cumulative_local_expert_recv_stats=stats, use_fp8=use_fp8,
                quant_mode=mode,
            )  # fmt: skip
            assert hook is None
            assert count.tolist() == [len(rows) for rows in want]
            data, scales = recv if isinstance(recv, tuple) else (recv, None)
            columns = HIDDEN // 2 if mode == "mx_fp4_e2m1" else HIDDEN  # fp4: two values per byte
            assert tuple(data.shape) == (EXPERTS_PER_RANK, world * MAX_TOKENS, columns)
            for i, rows in enumerate(want):
                assert handle.src_info[i, : len(rows)].tolist() == [t for _, t in rows]
                for s in range(world):
                    mine = [j for j, (src, _) in enumerate(rows) if src == s]
                    begin, n = int(handle.layout_range[i, s]) >> 32, int(handle.layout_range[i, s]) & 0xFFFFFFFF
                    assert n == len(mine) and (n == 0 or begin == mine[0])
                if not rows:
                    continue
                sent = torch.stack([inputs[s][0][t] for s, t in rows])
                expect = quantize(sent, mode or ("fp8_e4m3" if use_fp8 else None))
                if scales is None:
                    assert torch.equal(data[i, : len(rows)], expect)
                else:
                    assert torch.equal(data[i, : len(rows)].view(torch.uint8), expect[0].view(torch.uint8))
                    assert torch.equal(scales[i, : len(rows)].view(torch.uint8), expect[1].view(torch.uint8))
        assert stats.tolist() == [4 * len(rows) for rows in want]  # one count per dispatch above

        # Experts return their bf16 rows unchanged: combine gives x * sum of the valid weights.
        recv, _, handle, _, _ = buffer.low_latency_dispatch(x, topk_idx, MAX_TOKENS, experts, use_fp8=False)
        x_rows = [recv[i, : len(rows)].clone() for i, rows in enumerate(want)]  # its half is reused two calls on
        combined, _, _ = buffer.low_latency_combine(recv, topk_idx, weights, handle)
        expect = ref.low_latency_combined(x, topk_idx, weights)
        torch.testing.assert_close(combined, expect, rtol=1e-2, atol=1e-2)
        out = torch.empty_like(combined)
        again, _, _ = buffer.low_latency_combine(recv, topk_idx, weights, handle, out=out)
        assert again is out and torch.equal(out, combined)  # bit-identical rerun

        # Zero copy: the experts write into the combine buffer; the sums are read from every rank's buffer.
        buffer_x = buffer.get_next_low_latency_combine_buffer(handle)
        buffer_x.copy_(recv)
        zero, _, _ = buffer.low_latency_combine(buffer_x, topk_idx, weights, handle, zero_copy=True)
        assert torch.equal(zero, combined)

        # Hooks: the sends happen in the call, the receive in hook(); two batches in flight keep their halves.
        first, _, h1, _, hook1 = buffer.low_latency_dispatch(x, topk_idx, MAX_TOKENS, experts, use_fp8=False,
                                                             return_recv_hook=True)  # fmt: skip
        hook1()
        second, _, h2, _, hook2 = buffer.low_latency_dispatch(x * 2, topk_idx, MAX_TOKENS, experts, use_fp8=False,
                                                              return_recv_hook=True)  # fmt: skip
        hook2()
        filled = [len(rows) for rows in want]  # slots past recv_count hold garbage
        for i, n in enumerate(filled):
            assert torch.equal(first[i, :n], x_rows[i]) and torch.equal(second[i, :n], x_rows[i] * 2)
        combined2, _, hook = buffer.low_latency_combine(second, topk_idx, weights, h2, return_recv_hook=True)
        hook()
        torch.testing.assert_close(combined2, ref.low_latency_combined(x * 2, topk_idx, weights), rtol=1e-2, atol=1e-2)
    finally:
        dist.destroy_process_group()


def test_rdma_size_hint_refuses_sizes_that_are_not_positive_ints():
    import deep_ep

    with pytest.raises(RuntimeError, match="num_max_dispatch_tokens_per_rank must be an int > 0, got -8"):
        deep_ep.Buffer.get_low_latency_rdma_size_hint(-8, 64, 2, 4)
    with pytest.raises(RuntimeError, match="hidden must be an int > 0, got 64.0"):
        deep_ep.Buffer.get_low_latency_rdma_size_hint(8, 64.0, 2, 4)
    numpy = pytest.importorskip("numpy")  # integers of other types are integers
    assert deep_ep.Buffer.get_low_latency_rdma_size_hint(
        numpy.int64(8), 64, 2, 4
    ) == deep_ep.Buffer.get_low_latency_rdma_size_hint(8, 64, 2, 4)


@pytest.mark.parametrize(("world", "transport"), [(2, "shm"), (4, "shm"), (8, "shm"), (4, "torch.distributed")])
def test_low_latency_across_ranks(world, transport, run_ranks):
    run_ranks(__file__, world, transport)


if __name__ == "__main__":
    _run_rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
