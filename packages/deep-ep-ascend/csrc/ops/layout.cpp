#include "kernels/kernels.h"
#include "ops/ops.h"

namespace deep_ep {

using namespace sgl_npu_core;

void get_dispatch_layout(const Tensor& topk_idx, int64_t num_experts, int64_t num_ranks, Tensor num_tokens_per_rank,
                         Tensor num_tokens_per_expert, Tensor is_token_in_rank) {
  check_cpu(topk_idx, "topk_idx");
  STD_TORCH_CHECK(topk_idx.dim() == 2, "topk_idx must be [tokens, topk], got ", topk_idx.dim(), " dims");
  const bool is64 = topk_idx.scalar_type() == ScalarType::Long;
  STD_TORCH_CHECK(is64 || topk_idx.scalar_type() == ScalarType::Int, "topk_idx must be int64 or int32, got ",
                  dtype_name(topk_idx.scalar_type()));
  check_last_dim_contiguous(topk_idx, "topk_idx");
  STD_TORCH_CHECK(num_ranks > 0 && num_experts > 0 && num_experts % num_ranks == 0, "num_experts (", num_experts,
                  ") must be a positive multiple of the ranks (", num_ranks, ")");
  const int64_t tokens = topk_idx.size(0), topk = topk_idx.size(1);
  for (const auto& [t, size, dtype, name] :
       {std::tuple{&num_tokens_per_rank, num_ranks, ScalarType::Int, "num_tokens_per_rank"},
        std::tuple{&num_tokens_per_expert, num_experts, ScalarType::Int, "num_tokens_per_expert"}}) {
    check_cpu(*t, name);
    check_dtype(*t, dtype, name);
    STD_TORCH_CHECK(t->dim() == 1 && t->size(0) == size && t->is_contiguous(), name, " must be a contiguous [", size,
                    "]");
  }
  check_cpu(is_token_in_rank, "is_token_in_rank");
  check_dtype(is_token_in_rank, ScalarType::Bool, "is_token_in_rank");
  STD_TORCH_CHECK(is_token_in_rank.dim() == 2 && is_token_in_rank.size(0) == tokens &&
                      is_token_in_rank.size(1) == num_ranks && is_token_in_rank.is_contiguous(),
                  "is_token_in_rank must be a contiguous [", tokens, ", ", num_ranks, "]");
  // Every expert id must name an expert (or be -1) before anything is counted.
  const int64_t stride = topk_idx.stride(0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t k = 0; k < topk; ++k) {
      const int64_t e = is64 ? static_cast<const int64_t*>(topk_idx.const_data_ptr())[t * stride + k]
                             : static_cast<const int32_t*>(topk_idx.const_data_ptr())[t * stride + k];
      STD_TORCH_CHECK(-1 <= e && e < num_experts, "topk_idx[", t, ", ", k, "] = ", e, " is not an expert in [0, ",
                      num_experts, ") or -1");
    }
  LayoutArgs a{topk_idx.const_data_ptr(),
               is64,
               tokens,
               topk,
               stride,
               num_experts,
               num_ranks,
               static_cast<int32_t*>(num_tokens_per_rank.mutable_data_ptr()),
               static_cast<int32_t*>(num_tokens_per_expert.mutable_data_ptr()),
               static_cast<bool*>(is_token_in_rank.mutable_data_ptr())};
  SGL_NPU_ISA_CALL(dispatch_layout, a);
}

}  // namespace deep_ep
