"""A peer that dies or never arrives: the other rank's dispatch raises RuntimeError within the timeout (5 s here:
Buffer(timeout_s=...) on shared memory, init_process_group(timeout=...) over torch.distributed) instead of hanging.
Each rank is this file run as a script."""

import datetime
import os
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

TIMEOUT_S = 5


def _run_rank(rank: int, init_file: str, peer: str, transport: str) -> None:
    import deep_ep

    timeout = datetime.timedelta(seconds=TIMEOUT_S)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2, timeout=timeout)
    nvl_bytes = 1 << 20 if transport == "shm" else 0
    buffer = deep_ep.Buffer(dist.group.WORLD, num_nvl_bytes=nvl_bytes, timeout_s=TIMEOUT_S)
    if rank == 1:  # the failing peer
        if peer == "hangs":
            time.sleep(4 * TIMEOUT_S)
        sys.exit(0)
    topk_idx = torch.tensor([[0, 3], [1, 2]])
    per_rank, _, per_expert, in_rank, _ = buffer.get_dispatch_layout(topk_idx, 4)
    start = time.monotonic()
    try:
        buffer.dispatch(torch.randn(2, 16), num_tokens_per_rank=per_rank, is_token_in_rank=in_rank,
                        num_tokens_per_expert=per_expert, topk_idx=topk_idx, topk_weights=torch.rand(2, 2))  # fmt: skip
    except RuntimeError:
        elapsed = time.monotonic() - start
        print(f"raised after {elapsed:.1f} s", flush=True)
        # Leave without interpreter teardown: destroying a gloo group with a timed-out operation may abort.
        os._exit(0 if elapsed < 3 * TIMEOUT_S else 3)
    os._exit(2)  # the dispatch returned although its peer never took part


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")
@pytest.mark.parametrize("transport", ["shm", "torch.distributed"])
@pytest.mark.parametrize("peer", ["dies", "hangs"])
def test_dispatch_raises_when_a_peer_is_gone(peer, transport, tmp_path):
    ranks = [
        subprocess.Popen([sys.executable, __file__, str(r), str(tmp_path / "init"), peer, transport],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]  # fmt: skip
    out = ranks[0].communicate(timeout=120)[0]
    ranks[1].kill()  # a hanging peer would sleep on
    ranks[1].communicate(timeout=120)
    assert ranks[0].returncode == 0, out[-3000:]
    assert "raised after" in out


if __name__ == "__main__":
    _run_rank(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
