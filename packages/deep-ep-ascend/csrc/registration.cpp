// The wheel's only registration file: schemas of torch.ops.deep_ep.* and their CPU kernels.
#include <torch/csrc/stable/library.h>

#include "ops/ops.h"

STABLE_TORCH_LIBRARY(deep_ep, m) {
  m.def(
      "get_dispatch_layout(Tensor topk_idx, int num_experts, int num_ranks, Tensor(a!) num_tokens_per_rank, "
      "Tensor(b!) num_tokens_per_expert, Tensor(c!) is_token_in_rank) -> ()");
}

STABLE_TORCH_LIBRARY_IMPL(deep_ep, CPU, m) { m.impl("get_dispatch_layout", TORCH_BOX(&deep_ep::get_dispatch_layout)); }
