"""split_qkv_tp_rmsnorm_rope across 2 gloo processes: each rank holds half of the q and k heads, and the result
equals the single-process op on the whole row (the norm spans the full width through the all-reduce)."""

import re
import subprocess
import sys

import pytest
import sgl_npu_norm as ops
import torch
import torch.distributed as dist

TOKENS, Q, KV, HEAD, ROT, EPS = 3, 256, 128, 64, 32, 1e-6  # per rank


def _whole():
    """Inputs of the unsharded layer: qkv [T, 2Q + 2 * 2KV], weights, tables (same on every rank)."""
    g = torch.Generator().manual_seed(0)
    qkv = torch.randn(TOKENS, 2 * Q + 4 * KV, generator=g).to(torch.bfloat16)
    qw, kw = torch.randn(2 * Q, generator=g), torch.randn(2 * KV, generator=g)
    angles = torch.rand(TOKENS, ROT // 2, generator=g) * 6
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    return qkv, qw, kw, cos, sin


def _shard(rank):
    qkv, qw, kw, cos, sin = _whole()
    q, k, v = qkv.split([2 * Q, 2 * KV, 2 * KV], dim=-1)
    part = lambda t, n: t[..., rank * n : (rank + 1) * n]  # noqa: E731
    return torch.cat([part(q, Q), part(k, KV), part(v, KV)], -1), part(qw, Q), part(kw, KV), cos, sin


MALFORMED = {"short": lambda qkv: qkv[:, 1:], "flat": lambda qkv: qkv[0]}  # a column short; no token dim


def _run_rank(rank: int, world: int, init_file: str, out_file: str, refusing_rank: int, how: str) -> None:
    """One rank's call; with ``refusing_rank`` >= 0 that rank passes a qkv malformed as ``MALFORMED[how]``, and
    each rank saves the message of the error it raised instead of the outputs."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        qkv, qw, kw, cos, sin = _shard(rank)
        if rank == refusing_rank:
            qkv = MALFORMED[how](qkv)
        try:
            torch.save(ops.split_qkv_tp_rmsnorm_rope(qkv, cos, sin, Q, KV, HEAD, EPS, qw, kw, ROT), out_file)
        except RuntimeError as error:
            torch.save(str(error), out_file)
    finally:
        dist.destroy_process_group()


def _run_two_ranks(tmp_path, refusing_rank: int = -1, how: str = "short") -> list:
    # Each rank is this file run as a script (a fresh interpreter, as torchrun would start it).
    files = [str(tmp_path / "init"), *(str(tmp_path / f"{r}.pt") for r in range(2))]
    argv = lambda r: [sys.executable, __file__, str(r), "2", files[0], files[1 + r], str(refusing_rank), how]  # noqa: E731
    ranks = [subprocess.Popen(argv(r)) for r in range(2)]
    try:
        assert [p.wait(timeout=120) for p in ranks] == [0, 0]
    finally:
        for p in ranks:
            p.kill()  # a rank still waiting in the collective
    return [torch.load(f) for f in files[1:]]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
@pytest.mark.parametrize("how,own", [("short", "qkv must have 512 columns"), ("flat", "qkv must be .tokens, hidden.")])
def test_a_refusing_rank_raises_and_so_do_its_peers(tmp_path, how, own):
    """The rank with a malformed qkv raises its own error after joining the all-reduce, and its peer learns of it
    there. Without the joining, the peer waits in the collective while the refusing process lives (gloo's timeout
    is 30 minutes), and here failed with gloo's "Connection closed by peer" once it exited."""
    got = _run_two_ranks(tmp_path, refusing_rank=1, how=how)
    assert "another rank of the group refused its inputs" in got[0]
    assert re.search(own, got[1]), got[1]  # a 1-D qkv has no token count: the buffer is sized from cos


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
def test_two_gloo_ranks_match_the_whole_row(tmp_path):
    got = _run_two_ranks(tmp_path)
    qkv, qw, kw, cos, sin = _whole()
    want = ops.split_qkv_tp_rmsnorm_rope(qkv, cos, sin, 2 * Q, 2 * KV, HEAD, EPS, qw, kw, ROT)
    for i, name in enumerate("qkv"):
        merged = torch.cat([got[0][i], got[1][i]], -1)
        torch.testing.assert_close(merged, want[i], atol=1.6e-2, rtol=1.6e-2, msg=name)


if __name__ == "__main__":
    _run_rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6])
