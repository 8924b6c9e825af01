"""sgl-npu-norm: RMSNorm family, gated activations and split-QKV + QK-norm + RoPE fusions (``torch.ops.sgl_npu_norm``).

CPU tensors run the C++ kernels; cuda / npu tensors run the Triton kernels (``sgl_npu_norm.triton``),
or the PyTorch references (``sgl_npu_norm.reference``) where Triton is missing.
"""

from sgl_npu_core.library import load_op_library

load_op_library(__file__)

# The ops must exist before their fake and accelerator impls are registered.
from . import _accelerator, _meta
from .activation import silu_and_mul, swiglu_oai, swiglu_quant
from .norm import (
    add_rmsnorm_bias,
    fused_add_rmsnorm,
    gemma_fused_add_rmsnorm,
    gemma_rmsnorm,
    rmsnorm,
    rmsnorm_bias,
)
from .rope import (
    apply_rope_with_cos_sin_cache_inplace,
    fused_rope_qk_mqa,
    fused_split_qk_norm,
    split_qkv_rmsnorm_mrope,
    split_qkv_rmsnorm_rope,
    split_qkv_rmsnorm_rope_pos_cache,
    split_qkv_tp_rmsnorm_rope,
    split_qkvgate_gemma_rmsnorm_rope,
)

__version__ = "0.1.0"

__all__ = [
    "add_rmsnorm_bias",
    "apply_rope_with_cos_sin_cache_inplace",
    "fused_rope_qk_mqa",
    "fused_split_qk_norm",
    "fused_add_rmsnorm",
    "gemma_fused_add_rmsnorm",
    "gemma_rmsnorm",
    "rmsnorm",
    "rmsnorm_bias",
    "silu_and_mul",
    "split_qkv_rmsnorm_mrope",
    "split_qkv_rmsnorm_rope",
    "split_qkv_rmsnorm_rope_pos_cache",
    "split_qkv_tp_rmsnorm_rope",
    "split_qkvgate_gemma_rmsnorm_rope",
    "swiglu_oai",
    "swiglu_quant",
]
