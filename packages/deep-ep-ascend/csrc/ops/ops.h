// Op entry points of deep-ep-ascend (CPU): check arguments, then run the kernels.
#pragma once

#include "sgl_npu_core/checks.h"

namespace deep_ep {

using torch::stable::Tensor;

void get_dispatch_layout(const Tensor& topk_idx, int64_t num_experts, int64_t num_ranks, Tensor num_tokens_per_rank,
                         Tensor num_tokens_per_expert, Tensor is_token_in_rank);

}  // namespace deep_ep
