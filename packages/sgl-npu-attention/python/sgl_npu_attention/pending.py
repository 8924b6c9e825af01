"""Ops of this wheel whose kernels are not written yet: each raises NotImplementedError."""

from __future__ import annotations


def _pending(name: str, what: str):
    def op(*args, **kwargs):
        raise NotImplementedError(f"sgl_npu_attention.{name} ({what}) is not implemented yet")

    op.__name__ = name
    op.__doc__ = f"{what.capitalize()}. Not implemented yet: raises NotImplementedError."
    return op


mla_preprocess = _pending("mla_preprocess", "the fused DeepSeek MLA prolog")
