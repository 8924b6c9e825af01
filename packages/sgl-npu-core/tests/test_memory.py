import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sgl_npu_core import memory
from torch._subclasses.fake_tensor import FakeTensorMode


def _thp_mode() -> str:
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    text = path.read_text() if path.exists() else "[never]"
    return text[text.index("[") + 1 : text.index("]")]


def test_empty_and_empty_like_are_torch_empty():
    t = memory.empty(3, 5, dtype=torch.bfloat16)
    assert t.shape == (3, 5) and t.dtype == torch.bfloat16 and t.device.type == "cpu"
    x = torch.randn(4, 6)[:, ::2]  # not contiguous: the new tensor is
    y = memory.empty_like(x, torch.int8)
    assert y.shape == x.shape and y.dtype == torch.int8 and y.is_contiguous()
    assert memory.empty_like(x).dtype == x.dtype
    big = memory.empty((memory.MIN_BYTES // 2 + 1, 2), dtype=torch.bfloat16)
    big.fill_(1.5)
    assert torch.equal(big, torch.full_like(big, 1.5))


def test_no_advice_without_memory_to_advise():
    assert not memory.advise_huge_pages(torch.empty(1000))  # under one aligned 2 MB page
    assert not memory.advise_huge_pages(torch.empty(8 << 20, device="meta"))
    with FakeTensorMode():
        assert memory.empty(8 << 20, dtype=torch.uint8).shape == (8 << 20,)


@pytest.mark.skipif(not sys.platform.startswith("linux") or _thp_mode() == "never", reason="no transparent huge pages")
def test_large_cpu_tensors_take_the_advice():
    t = torch.empty(8 << 20, dtype=torch.uint8)
    assert memory.advise_huge_pages(t)
    assert memory.advise_huge_pages(t[1:].contiguous())  # any alignment: the aligned interior


def test_the_advice_can_be_turned_off():
    code = "import torch; from sgl_npu_core import memory; print(memory.advise_huge_pages(torch.empty(8 << 20)))"
    env = {**os.environ, "SGL_NPU_HUGE_PAGES": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr[-2000:]


# Over glibc's largest mmap threshold (32 MB): without the pool every such tensor is a new mapping, zero-filled by the
# kernel, so finding an earlier tensor's values in a new one shows that the pool handed its memory out again.
POOLED = (33 << 20) // 2


def test_fresh_outputs_reuse_the_memory_of_dropped_ones():
    a = memory.empty(POOLED, dtype=torch.bfloat16).fill_(7.0)
    b = memory.empty(POOLED, dtype=torch.bfloat16)  # a is alive: other memory
    assert b.data_ptr() != a.data_ptr()
    b.fill_(3.0)
    del a
    c = memory.empty_like(b).view(-1)  # a's memory, as a left it
    assert c.eq(7.0).all()
    tail = c[1:]  # a view keeps it in use after c is gone
    del c
    d = memory.empty((POOLED,), dtype=torch.bfloat16)
    assert d.data_ptr() not in (tail.data_ptr() - 2, b.data_ptr())
    e = memory.empty(POOLED // 2, dtype=torch.float32)  # same bytes, another dtype: any free block of the size
    assert e.shape == (POOLED // 2,) and e.dtype == torch.float32
    memory.release_pool()


def test_released_evicted_or_disabled_pool_gives_new_memory():
    code = (
        "import torch; from sgl_npu_core import memory\n"
        f"a = memory.empty({POOLED}, dtype=torch.bfloat16).fill_(7.0); del a\n"
        "{release}\n"
        f"print(int(memory.empty({POOLED}, dtype=torch.bfloat16).eq(7.0).any()))"
    )
    other_size = f"memory.empty({POOLED + 1024}, dtype=torch.bfloat16)"  # over 40 MB with a's: evicts a's block
    cases = [("", {}, "1"), ("memory.release_pool()", {}, "0"), ("", {"SGL_NPU_OUTPUT_POOL_MB": "0"}, "0")]
    cases += [(other_size, {"SGL_NPU_OUTPUT_POOL_MB": "40"}, "0"), (other_size, {}, "1")]
    for release, env, want in cases:
        done = subprocess.run(
            [sys.executable, "-c", code.format(release=release)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stdout.strip() == want, (release, env, done.stderr[-2000:])
