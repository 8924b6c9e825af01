"""sgl-npu-attention: attention over a paged KV cache (``torch.ops.sgl_npu_attention``).

CPU tensors run the C++ kernels; cuda / npu tensors run the Triton kernels (``sgl_npu_attention.triton``), or the
PyTorch references (``sgl_npu_attention.reference``) where Triton is missing.
"""

from sgl_npu_core.library import load_op_library

load_op_library(__file__)

# The ops must exist before their fake and accelerator impls are registered.
from . import _accelerator, _meta
from .attention import decode_attention, extend_attention
from .bmm import batch_matmul_transpose
from .indexer import lightning_indexer
from .mla import decode_mla
from .prolog import mla_preprocess

__version__ = "0.1.0"

__all__ = [
    "batch_matmul_transpose",
    "decode_attention",
    "decode_mla",
    "extend_attention",
    "lightning_indexer",
    "mla_preprocess",
]
