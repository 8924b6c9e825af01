"""fused_deep_moe across gloo processes: bit-identical to the chain of separate steps (low-latency dispatch, the
int8 expert FFN, low-latency combine), close to an fp32 reference of the whole MoE computed from every rank's
inputs, and ep_recv_count against the routing. Each rank is this file run as a script (see conftest.run_ranks)."""

import gc
import sys
import weakref

import pytest
import torch
import torch.distributed as dist

HIDDEN, INTER, TOPK, EXPERTS_PER_RANK, MAX_TOKENS = 128, 64, 3, 2, 5


def _weights(expert: int):
    """Expert `expert`'s w8a8 weights, the same on every rank."""
    g = torch.Generator().manual_seed(1000 + expert)
    w13 = torch.randint(-16, 16, (HIDDEN, 2 * INTER), generator=g, dtype=torch.int8)
    w2 = torch.randint(-16, 16, (INTER, HIDDEN), generator=g, dtype=torch.int8)
    s13 = torch.empty(2 * INTER).uniform_(0.0015, 0.0019, generator=g)
    s2 = torch.empty(HIDDEN).uniform_(0.0015, 0.0019, generator=g)
    return w13, s13, w2, s2


def _inputs(rank: int, world: int):
    g = torch.Generator().manual_seed(300 + rank)
    tokens = MAX_TOKENS - rank % 2
    x = torch.randn(tokens, HIDDEN, generator=g).to(torch.bfloat16)
    topk_idx = torch.rand(tokens, EXPERTS_PER_RANK * world, generator=g).topk(TOPK, dim=-1).indices
    topk_idx[0, 2] = -1
    return x, topk_idx, torch.rand(tokens, TOPK, generator=g)


def _reference(x, topk_idx, topk_weights) -> torch.Tensor:
    """The MoE in fp32 from dequantized weights (no int8 activations)."""
    out = torch.zeros(x.shape, dtype=torch.float32)
    for t in range(x.shape[0]):
        for k, e in enumerate(topk_idx[t].tolist()):
            if e < 0:
                continue
            w13, s13, w2, s2 = _weights(e)
            h = x[t].float() @ (w13.float() * s13)
            act = torch.nn.functional.silu(h[:INTER]) * h[INTER:]
            out[t] += topk_weights[t, k] * (act @ (w2.float() * s2))
    return out


def _run_rank(rank: int, world: int, init_file: str, transport: str) -> None:
    import deep_ep
    from deep_ep.moe import expert_ffn
    from deep_ep.quant import calc_diff

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        experts = EXPERTS_PER_RANK * world
        hint = deep_ep.Buffer.get_low_latency_rdma_size_hint(MAX_TOKENS, HIDDEN, world, experts)
        buffer = deep_ep.Buffer(dist.group.WORLD, num_rdma_bytes=hint if transport == "shm" else 0)
        x, topk_idx, weights = _inputs(rank, world)
        local = [_weights(rank * EXPERTS_PER_RANK + i) for i in range(EXPERTS_PER_RANK)]
        w13, s13, w2, s2 = (torch.stack(w) for w in zip(*local, strict=True))
        out, ep_recv_count = buffer.fused_deep_moe(x, topk_idx, weights, w13, s13, w2, s2, MAX_TOKENS, experts)
        first = out.clone()  # later calls may reuse out's memory

        # The chain of separate steps.
        (data, scales), count, handle, _, _ = buffer.low_latency_dispatch(x, topk_idx, MAX_TOKENS, experts,
                                                                          quant_mode="int8")  # fmt: skip
        y = torch.zeros(data.shape, dtype=torch.bfloat16)
        for i, n in enumerate(count.tolist()):
            y[i, :n] = expert_ffn(data[i, :n], scales[i, :n], w13[i], s13[i], w2[i], s2[i])
        chain, _, _ = buffer.low_latency_combine(y, topk_idx, weights, handle)
        assert torch.equal(out, chain)
        diff = calc_diff(out.float(), _reference(x, topk_idx, weights))
        assert diff < 1e-3, diff

        routed = [_inputs(s, world)[1] for s in range(world)]
        want = [int((idx == rank * EXPERTS_PER_RANK + i).sum()) for i in range(EXPERTS_PER_RANK) for idx in routed]
        assert ep_recv_count.tolist() == want
        # Float weights on one rank only: it names them, its peers name the rank; none is left waiting.
        gc.disable()  # so that only plain reference counting can free the Buffer below
        bad = w13.float() if rank == 1 else w13
        try:
            buffer.fused_deep_moe(x, topk_idx, weights, bad, s13, w2, s2, MAX_TOKENS, experts)
        except RuntimeError as e:
            assert ("int8" if rank == 1 else "rank(s) [1] rejected") in str(e), e
        else:
            raise AssertionError("float weights were accepted")
        mode = 5 if rank == 1 else 1  # Ascend's codes are 0 (BF16) and 1 (INT8)
        try:
            buffer.fused_deep_moe(x, topk_idx, weights, w13, s13, w2, s2, MAX_TOKENS, experts, quant_mode=mode)
        except RuntimeError as e:
            assert ("quant_mode must be 0 or 1" if rank == 1 else "rank(s) [1] rejected") in str(e), e
        else:
            raise AssertionError("quant_mode 5 was accepted")
        # Still in step afterwards.
        again, _ = buffer.fused_deep_moe(x, topk_idx, weights, w13, s13, w2, s2, MAX_TOKENS, experts)
        assert torch.equal(again, first)
        # No reference cycle through the rejected call's error holds the Buffer, and so the group: a gloo group
        # freed only by the cycle collector, after destroy_process_group, aborts the process at exit.
        alive = weakref.ref(buffer)
        del buffer
        assert alive() is None, "the rejected call left the Buffer referenced"
        gc.enable()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("world", "transport"), [(2, "shm"), (4, "torch.distributed")])
def test_fused_deep_moe_matches_the_chain(world, transport, run_ranks):
    run_ranks(__file__, world, transport)


if __name__ == "__main__":
    _run_rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
