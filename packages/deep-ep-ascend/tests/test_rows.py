"""The row movers behind both transports (torch.ops.deep_ep.copy_rows / reduce_rows) and the shared-memory
barrier, in one process: against plain indexing and fp32 sums; malformed input raises before any row moves."""

import os
import time

import deep_ep  # noqa: F401  (loads torch.ops.deep_ep)
import pytest
import torch

D = torch.ops.deep_ep


def test_copy_rows_gathers_and_scatters():
    src = torch.randint(0, 255, (7, 40), dtype=torch.uint8)
    dst = torch.zeros(9, 40, dtype=torch.uint8)
    src_rows, dst_rows = torch.tensor([6, 0, 3]), torch.tensor([8, 2, 5])
    D.copy_rows(src, src_rows, dst, dst_rows)
    want = torch.zeros_like(dst)
    want[dst_rows] = src[src_rows]
    assert torch.equal(dst, want)
    block = torch.zeros(7, 40, dtype=torch.uint8)
    D.copy_rows(src, None, block, None)
    assert torch.equal(block, src)


def test_copy_rows_streams_large_blocks():
    src = torch.randint(0, 255, (600, 16384), dtype=torch.uint8)  # 9.8 MB: the streaming-store path
    dst = torch.empty(601, 16384, dtype=torch.uint8)
    perm = torch.randperm(600)
    D.copy_rows(src, perm, dst[1:], None)
    assert torch.equal(dst[1:], src[perm])


@pytest.mark.parametrize("fp32_out", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("hidden", [5, 136, 2100])
def test_reduce_rows_sums_in_slot_order(dtype, hidden, fp32_out):
    a, b = torch.randn(4, hidden).to(dtype), torch.randn(3, hidden).to(dtype)
    rows = torch.tensor([[0, 5, -1], [-1, -1, -1], [6, 1, 4], [3, -1, 2]])
    weights = torch.rand(4, 3)
    bias = torch.randn(4, hidden)
    out = torch.empty(4, hidden, dtype=torch.float32 if fp32_out else dtype)
    D.reduce_rows(a, b, rows, weights, bias, out)
    both = torch.cat([a, b]).float()
    want = bias.clone()
    for s in range(3):
        valid = rows[:, s] >= 0
        want[valid] += weights[valid, s : s + 1] * both[rows[valid, s]]
    torch.testing.assert_close(out.float(), want.to(out.dtype).float(), rtol=1e-2 if dtype != torch.float32 else 1e-6,
                               atol=1e-2 if dtype != torch.float32 else 1e-5)  # fmt: skip


def test_malformed_rows_raise_before_moving():
    src, dst = torch.zeros(4, 8, dtype=torch.uint8), torch.ones(4, 8, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match=r"src_rows\[1\] = 4 is outside"):
        D.copy_rows(src, torch.tensor([0, 4]), dst, None)
    with pytest.raises(RuntimeError, match="dst_rows"):
        D.copy_rows(src, None, dst, torch.tensor([0, 1, 2, -1]))
    with pytest.raises(RuntimeError, match="src must be"):
        D.copy_rows(src.float(), None, dst, None)
    with pytest.raises(RuntimeError, match="bytes"):
        D.copy_rows(src, None, torch.zeros(4, 9, dtype=torch.uint8), None)
    assert (dst == 1).all()
    a, out = torch.randn(2, 8), torch.zeros(2, 8)
    with pytest.raises(RuntimeError, match=r"rows\[1, 0\] = 2 is not a row"):
        D.reduce_rows(a, a[:0], torch.tensor([[0], [2]]), None, None, out)
    with pytest.raises(RuntimeError, match="weights"):
        D.reduce_rows(a, a[:0], torch.tensor([[0], [1]]), torch.ones(2, 2), None, out)
    with pytest.raises(RuntimeError, match="out must be float32 or have a's dtype"):
        D.reduce_rows(a, a[:0], torch.tensor([[0], [1]]), None, None, out.bfloat16())
    with pytest.raises(RuntimeError, match="b must have the dtype of a"):
        D.reduce_rows(a, a[:0].half(), torch.tensor([[0], [1]]), None, None, out)
    assert (out == 0).all()


def test_opcheck():
    src, dst = torch.randint(0, 9, (5, 16), dtype=torch.uint8), torch.zeros(5, 16, dtype=torch.uint8)
    torch.library.opcheck(D.copy_rows.default, (src, torch.tensor([4, 1]), dst, torch.tensor([0, 3])))
    a = torch.randn(3, 8)
    torch.library.opcheck(D.reduce_rows.default, (a, a[:1], torch.tensor([[0, 3], [1, -1]]), None, None,
                                                  torch.empty(2, 8)))  # fmt: skip
    torch.library.opcheck(D.quantize_int8.default, (a, torch.empty(3, 8, dtype=torch.int8), torch.empty(3)))
    # A barrier every rank has already passed returns at once (opcheck calls it several times).
    flags = torch.full((2, 8), 5, dtype=torch.int64)
    torch.library.opcheck(D.shm_barrier.default, (flags, 0, 3, 1.0, torch.tensor([os.getpid(), os.getpid()])))


def test_barrier_names_the_missing_rank_after_the_timeout():
    flags, pids = torch.zeros(2, 8, dtype=torch.int64), torch.tensor([os.getpid(), os.getpid()])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank\(s\) 1 of the group did not arrive within 0.2 s"):
        D.shm_barrier(flags, 0, 1, 0.2, pids)
    assert time.monotonic() - start < 5
    assert flags[:, 0].tolist() == [1, 1]  # it announced itself to both ranks
    flags[0, 1] = 1  # rank 1 arrives
    D.shm_barrier(flags, 0, 1, 0.2, pids)


def test_barrier_notices_an_exited_peer_before_the_timeout():
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid no longer names a process
    flags, pids = torch.zeros(2, 8, dtype=torch.int64), torch.tensor([os.getpid(), gone.pid])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="has exited"):
        D.shm_barrier(flags, 0, 1, 60.0, pids)
    assert time.monotonic() - start < 10


def test_output_pool_reuses_only_unreferenced_tensors():
    from deep_ep.pool import OutputPool

    pool = OutputPool()
    first = pool.empty("out", (4, 8), torch.float32)
    view = first[1:]
    assert pool.empty("out", (4, 8), torch.float32) is not first  # `first` and a view of it are still held
    del view
    second = pool.empty("out", (4, 8), torch.float32)
    del first, second
    third = pool.empty("out", (4, 8), torch.float32)  # only the pool refers to it now: handed out again
    assert pool.empty("out", (4, 8), torch.float32) is not third
    assert pool.empty("out", (2, 8), torch.float32).shape == (2, 8)


def test_reduce_rows_reads_a_flat_source_at_element_offsets():
    flat = torch.randn(100).to(torch.bfloat16)
    offsets = torch.tensor([[3, 90], [-1, 0]])
    out = torch.empty(2, 10, dtype=torch.float32)
    D.reduce_rows(flat, flat[:0].view(0, 10), offsets, None, None, out)
    want = torch.stack([flat[3:13].float() + flat[90:100].float(), flat[0:10].float()])
    assert torch.equal(out, want)
    with pytest.raises(RuntimeError, match="does not start a row inside a"):
        D.reduce_rows(flat, flat[:0].view(0, 10), torch.tensor([[91]]), None, None, out[:1])


def test_indices_inside_an_output_are_refused():
    # an index checked once and read again while rows are written would be overwritten midway (out-of-range reads)
    dst = torch.zeros(4, 64, dtype=torch.uint8)
    idx = dst.view(-1)[:32].view(torch.int64)
    with pytest.raises(RuntimeError, match="dst must not overlap dst_rows"):
        D.copy_rows(torch.full((4, 64), 255, dtype=torch.uint8), None, dst, idx[:4].copy_(torch.arange(4)))
    a, out = torch.randn(4, 16), torch.zeros(4, 16)
    rows = out.view(torch.int64).view(-1)[:8].view(4, 2)
    with pytest.raises(RuntimeError, match="out must not overlap rows"):
        D.reduce_rows(a, a[:0], rows.copy_(torch.tensor([[0, 1], [2, 3], [0, 1], [2, 3]])), None, None, out)
