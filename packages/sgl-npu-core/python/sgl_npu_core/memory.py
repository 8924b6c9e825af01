"""Fresh CPU outputs backed by 2 MB pages.

An op's fresh output is first written by the op itself, and every 4 KB page of it faults on that first write:
~2.5 µs a page on these machines, so a 50 MB output costs ~30 ms, several times the kernel's own time. Advised
with ``MADV_HUGEPAGE`` before that write (Linux transparent huge pages in ``madvise`` mode, the usual default), the
2 MB-aligned part of it faults once per 2 MB instead (rmsnorm 4096 x 7168 bf16 with a fresh output: 29 -> 9.5 ms
here, 4.9 ms into a preallocated one). torch's own allocator does the same for every allocation when the process
starts with ``THP_MEM_ALLOC_ENABLE=1``.

The kernel compacts memory to find free 2 MB pages (THP ``defrag`` = ``madvise``, the usual default) until the
process's own freed outputs supply them: split_qkv_rmsnorm_rope of 4096 Qwen3-8B tokens with fresh outputs took
55-96 ms for its first 8-12 calls in a new process, then 12 ms (24-30 ms every call without the advice).
``SGL_NPU_HUGE_PAGES=0`` turns the advice off.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

HUGE_PAGE = 2 << 20
MIN_BYTES = 4 << 20  # smaller tensors hold at most a page or two of 2 MB
_MADV_HUGEPAGE = 14  # <sys/mman.h> on Linux


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise() if os.environ.get("SGL_NPU_HUGE_PAGES", "1") != "0" else None


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Asks for 2 MB pages under the 2 MB-aligned part of a contiguous CPU tensor's memory, before its first write.
    A hint: returns whether the kernel took it (False off Linux, with THP off, or under one aligned page)."""
    if _madvise is None or t.device.type != "cpu" or type(t) is not torch.Tensor:  # FakeTensor: no memory
        return False
    begin = t.data_ptr()
    start = -(-begin // HUGE_PAGE) * HUGE_PAGE
    end = (begin + t.nbytes) // HUGE_PAGE * HUGE_PAGE
    return end > start and _madvise(start, end - start, _MADV_HUGEPAGE) == 0


def _fresh(t: torch.Tensor) -> torch.Tensor:
    if t.nbytes >= MIN_BYTES and not torch.compiler.is_compiling():
        advise_huge_pages(t)
    return t


def empty(*size, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.empty(*size, dtype=dtype, device=device)``; a CPU tensor of MIN_BYTES or more asks for 2 MB pages."""
    return _fresh(torch.empty(*size, dtype=dtype, device=device))


def empty_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous tensor of x's shape and device (x's dtype unless given), as :func:`empty`. ``empty_like`` costs
    ~3 µs here against ~7 µs for ``torch.empty(shape, ...)``: the one for the ops' per-token calls."""
    return _fresh(torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format))
