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

Faulting the pages in is still the larger part of a fresh output's cost (split_qkv_rmsnorm_rope, 4096 Qwen3-8B
tokens: 4 ms into preallocated outputs, 11-20 ms into fresh ones in the same run), and a large allocation is a new
mapping every time (glibc maps anything over 32 MB afresh and unmaps it when freed). So, as torch's CUDA caching
allocator does for device memory, fresh outputs of MIN_BYTES or more come from a pool: the memory of an output
whose every tensor is gone (its storage's use count back to the pool's own reference) is handed out again to the
next output of the same byte size, already faulted in. The pool holds at most ``SGL_NPU_OUTPUT_POOL_MB`` (default
1024) and keeps nothing with 0; :func:`release_pool` gives back what no tensor uses.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading

import torch
from torch._guards import detect_fake_mode

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
    """A new tensor of MIN_BYTES or more, advised onto 2 MB pages before its first write."""
    if not torch.compiler.is_compiling():
        advise_huge_pages(t)
    return t


_use_count = getattr(torch._C, "_storage_Use_Count", None)  # absent: no pool


class _OutputPool:
    """Byte blocks of dropped fresh outputs, reused by the next output of the same size (see the module docstring)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.blocks: list[tuple[torch.Tensor, int]] = []  # (uint8 block, its use count when only the pool holds it)
        self.held = 0  # bytes in blocks
        self.lock = threading.Lock()

    @staticmethod
    def _free(block: torch.Tensor, idle: int) -> bool:
        return _use_count(block.untyped_storage()._cdata) == idle

    def _drop(self, i: int) -> None:
        self.held -= self.blocks.pop(i)[0].numel()

    def take(self, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor:
        """A tensor of ``shape`` and ``dtype`` on a free block of its size (or a new one). The view is made under
        the lock: it is what marks the block in use, so another thread cannot take the block in between."""
        nbytes = shape.numel() * dtype.itemsize
        with self.lock:
            for i, (block, idle) in enumerate(self.blocks):
                if block.numel() == nbytes and self._free(block, idle):
                    self.blocks.append(self.blocks.pop(i))  # most recently used last
                    return block.view(dtype).view(shape)
            block = torch.empty(nbytes, dtype=torch.uint8, device="cpu")
            advise_huge_pages(block)
            i = 0
            while self.held + nbytes > self.capacity and i < len(self.blocks):  # least recently used first
                if self._free(*self.blocks[i]):
                    self._drop(i)
                else:
                    i += 1
            if self.held + nbytes <= self.capacity:
                self.blocks.append((block, _use_count(block.untyped_storage()._cdata)))
                self.held += nbytes
            return block.view(dtype).view(shape)

    def release(self) -> None:
        with self.lock:
            for i in reversed(range(len(self.blocks))):
                if self._free(*self.blocks[i]):
                    self._drop(i)


_pool = _OutputPool(int(os.environ.get("SGL_NPU_OUTPUT_POOL_MB", "1024")) << 20)


def release_pool() -> None:
    """Frees the pooled memory of fresh outputs that no tensor uses any more."""
    _pool.release()


def _pooled(shape: torch.Size, dtype: torch.dtype, device) -> torch.Tensor | None:
    """A tensor of MIN_BYTES or more on pooled memory, or None where the pool does not apply (not the CPU, tracing,
    no pool). The callers test the size first: these checks cost ~5 µs, several times a small allocation."""
    if _use_count is None or _pool.capacity == 0 or torch.compiler.is_compiling() or detect_fake_mode() is not None:
        return None
    device = torch.device(device) if device is not None else torch.get_default_device()
    if device.type != "cpu":
        return None
    return _pool.take(shape, dtype)


def empty(*size, dtype: torch.dtype, device: torch.device | str | None = None) -> torch.Tensor:
    """``torch.empty(*size, dtype=dtype, device=device)``; a CPU tensor of MIN_BYTES or more comes from the pool, on
    2 MB pages. A small one is torch's own, with the size test the only cost added (~0.2 µs: a decode step's outputs
    are small and many; the sizes go to torch.empty one by one, which parses them ~0.4 µs faster than a tuple)."""
    dims = size[0] if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    if math.prod(dims) * dtype.itemsize < MIN_BYTES:
        return torch.empty(*dims, dtype=dtype, device=device) if dims else torch.empty((), dtype=dtype, device=device)
    shape = torch.Size(dims)
    if (pooled := _pooled(shape, dtype, device)) is not None:
        return pooled
    return _fresh(torch.empty(shape, dtype=dtype, device=device))


def empty_like(x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous tensor of x's shape and device (x's dtype unless given), as :func:`empty`."""
    dtype = dtype or x.dtype
    if x.numel() * dtype.itemsize < MIN_BYTES:
        return torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format)
    if (pooled := _pooled(x.shape, dtype, x.device)) is not None:
        return pooled
    return _fresh(torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format))
