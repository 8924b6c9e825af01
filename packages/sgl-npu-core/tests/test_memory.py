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
