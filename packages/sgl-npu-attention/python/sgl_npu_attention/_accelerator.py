"""cuda / npu implementations of the ops: the Triton kernels, or the references where Triton is missing."""

from __future__ import annotations

import torch

from . import _meta, reference
from ._meta import LIB


def _triton():
    from . import triton as kernels

    return kernels


def check_pages(block_table, seq_lens, k_cache) -> None:
    """The data checks of the C++ op: lengths within the block table, used pages within the cache (they read the
    values, so on a device they cost a host sync; the Triton path skips them)."""
    blocks, page = k_cache.shape[0], k_cache.shape[1]
    lens = seq_lens.long()
    _meta.check(bool(((lens >= 0) & (lens <= block_table.shape[1] * page)).all()),
                f"seq_lens must be in [0, {block_table.shape[1]} pages x {page}]")  # fmt: skip
    used = torch.arange(block_table.shape[1], device=block_table.device) < ((lens + page - 1) // page)[:, None]
    ids = block_table[used]
    _meta.check(bool(((ids >= 0) & (ids < blocks)).all()), f"block_table holds a block outside the cache ({blocks})")


def _ref_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out):
    _meta.check_decode(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window, out)
    check_pages(block_table, seq_lens, k_cache)
    out.copy_(reference.decode_attention(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, sliding_window))


LIB.accelerator_impl("decode_attention", lambda *a: _triton().decode_attention(*a), _ref_decode)
