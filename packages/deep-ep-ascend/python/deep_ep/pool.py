"""Large outputs handed out again once their last user has dropped them.

A fresh 58 MB tensor costs ~25 ms of page faults here (glibc returns big blocks to the kernel on free), more than
combine's own work. The pool keeps the tensor it last returned for each role and returns it again only when no
other tensor or view still refers to its storage, so callers never see it change under them; otherwise they get
a fresh tensor, as without the pool.
"""

from __future__ import annotations

import sys

import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)


def _users(t: torch.Tensor) -> tuple[int, int]:
    """Tensors sharing ``t``'s storage, and Python references to ``t`` itself."""
    return _use_count(t.untyped_storage()._cdata), sys.getrefcount(t)


class OutputPool:
    def __init__(self):
        self._kept: dict[str, tuple[torch.Tensor, tuple[int, int] | None]] = {}

    def empty(self, role: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        kept = self._kept.get(role)
        if kept is not None:
            t, free = kept
            if tuple(t.shape) == tuple(shape) and t.dtype == dtype and _users(t) == free:
                return t
        t = torch.empty(shape, dtype=dtype)
        if _use_count is not None:
            self._kept[role] = (t, None)
            free = _users(t)  # the counts while only the pool (and a local name, as in the check above) hold it
            self._kept[role] = (t, free)
        return t

    def clear(self) -> None:
        self._kept.clear()
