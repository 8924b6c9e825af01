"""Ops of this wheel whose kernels are not written yet: each raises NotImplementedError."""

from __future__ import annotations


def _pending(name: str, what: str):
    def op(*args, **kwargs):
        raise NotImplementedError(f"sgl_npu_attention.{name} ({what}) is not implemented yet")

    op.__name__ = name
    op.__doc__ = f"{what.capitalize()}. Not implemented yet: raises NotImplementedError."
    return op


lightning_indexer = _pending("lightning_indexer", "the DeepSeek-V3.2 sparse-attention indexer")
mla_preprocess = _pending("mla_preprocess", "the fused DeepSeek MLA prolog")
