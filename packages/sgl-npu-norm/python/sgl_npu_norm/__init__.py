"""sgl-npu-norm: RMSNorm family and gated activations (``torch.ops.sgl_npu_norm``).

CPU tensors run the C++ kernels; cuda / npu tensors run the Triton kernels (``sgl_npu_norm.triton``),
or the PyTorch references (``sgl_npu_norm.reference``) where Triton is missing.
"""

from sgl_npu_core.library import load_op_library

load_op_library(__file__)

from . import (
    _accelerator,  # noqa: E402,F401
    _meta,  # noqa: E402  (fake impls need the ops defined first)
)
from .activation import silu_and_mul, swiglu_oai, swiglu_quant  # noqa: E402
from .norm import (  # noqa: E402
    add_rmsnorm_bias,
    fused_add_rmsnorm,
    gemma_fused_add_rmsnorm,
    gemma_rmsnorm,
    rmsnorm,
    rmsnorm_bias,
)

__version__ = "0.1.0"

__all__ = [
    "add_rmsnorm_bias",
    "fused_add_rmsnorm",
    "gemma_fused_add_rmsnorm",
    "gemma_rmsnorm",
    "rmsnorm",
    "rmsnorm_bias",
    "silu_and_mul",
    "swiglu_oai",
    "swiglu_quant",
]
