"""Seeding, the Triton interpreter and the `on_test_device` fixture (SGL_NPU_TEST_DEVICE) for every test here, and
`run_ranks`: a multi-process test runs its own file as one script per rank."""

import glob
import os
import subprocess
import sys

import pytest
import torch.distributed as dist

pytest_plugins = ["sgl_npu_core.pytest_plugin"]


def _segments() -> set[str]:
    return set(glob.glob("/dev/shm/deep_ep.*"))


@pytest.fixture
def run_ranks(tmp_path):
    """``run_ranks(script, world, *args)`` runs ``python script rank world init_file *args`` for every rank and
    fails with the output of any rank that fails. Transport "2 nodes" sets DEEP_EP_RANKS_PER_NODE=world/2. No
    shared-memory segment may be left behind."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not built in")
    before = _segments()

    def run(script: str, world: int, *args: str, timeout: float = 240) -> list[str]:
        env = dict(os.environ)
        if "2 nodes" in args:
            env["DEEP_EP_RANKS_PER_NODE"] = str(world // 2)
        init = str(tmp_path / f"init{len(list(tmp_path.iterdir()))}")
        ranks = [
            subprocess.Popen([sys.executable, script, str(r), str(world), init, *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
            for r in range(world)
        ]  # fmt: skip
        try:
            outputs = [p.communicate(timeout=timeout)[0] for p in ranks]
        finally:
            for p in ranks:
                p.kill()
        codes = [p.returncode for p in ranks]
        failed = [f"rank {r} failed:\n{out[-2500:]}" for r, out in enumerate(outputs) if codes[r]]
        assert not failed, "\n".join(failed)
        return outputs

    yield run
    assert _segments() <= before, f"shared-memory segments left behind: {_segments() - before}"
