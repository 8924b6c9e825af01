"""Loading a wheel's op library and registering the non-CPU faces of its ops.

Every wheel builds one ``_C.so`` that defines its ops (``torch.ops.<namespace>.<op>``) with a C++ CPU
kernel. This module adds the rest of the "four faces":

- fake impls (``register_fake``), so ``torch.compile(fullgraph=True)`` and ``opcheck`` see the ops;
- accelerator impls: on ``cuda`` and on ``npu`` (torch's PrivateUse1 key, taken by torch_npu) the op
  runs its Triton kernel when Triton imports, else its PyTorch reference.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import torch

# torch dispatch keys of the accelerators that get a Python (Triton / reference) implementation.
ACCELERATOR_KEYS = {"cuda": "CUDA", "npu": "PrivateUse1"}


def load_op_library(package_file: str, name: str = "_C") -> None:
    """Load ``<name>.so`` that sits next to ``package_file`` (a package's ``__file__``)."""
    path = Path(package_file).with_name(f"{name}.so")
    if not path.exists():
        raise ImportError(f"{path} is missing: the wheel was installed without its compiled kernels")
    torch.ops.load_library(str(path))


@functools.cache
def triton_available() -> bool:
    """Whether a Triton with a usable backend can be imported (triton on CUDA, triton-ascend on NPU)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class OpLibrary:
    """The Python-side registrations of one wheel's op namespace."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._impl = torch.library.Library(namespace, "IMPL")

    def fake(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: the fake (meta) impl of ``name``: checks shapes and dtypes, touches no data."""
        return torch.library.register_fake(f"{self.namespace}::{name}", lib=self._impl)

    def accelerator_impl(self, name: str, triton_impl: Callable, reference_impl: Callable) -> None:
        """Run ``triton_impl`` on cuda/npu tensors, or ``reference_impl`` where Triton is missing."""

        def impl(*args, **kwargs):
            if triton_available():
                return triton_impl(*args, **kwargs)
            return reference_impl(*args, **kwargs)

        for key in ACCELERATOR_KEYS.values():
            self._impl.impl(name, impl, key)
