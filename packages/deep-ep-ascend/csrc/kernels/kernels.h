// Framework-free CPU kernels of deep-ep-ascend, compiled once per ISA (see sgl_npu_core/isa.h).
#pragma once
#include <cstdint>

#include "sgl_npu_core/isa.h"

namespace deep_ep {

// The routing layout of N tokens with top-k experts (expert e lives on rank e / (E / R); -1: no expert): how
// many tokens each rank receives (a token counts once per rank), how many (token, k) entries each expert gets,
// and which ranks each token goes to.
struct LayoutArgs {
  const void* topk_idx;  // [N, K] int64 or int32, rows topk_stride apart; entries checked in [-1, E)
  bool topk_int64;
  int64_t tokens, topk, topk_stride, num_experts, num_ranks;
  int32_t* tokens_per_rank;    // [R]
  int32_t* tokens_per_expert;  // [E]
  bool* is_token_in_rank;      // [N, R]
};

SGL_NPU_DECLARE_PER_ISA(void dispatch_layout(const LayoutArgs& a))

}  // namespace deep_ep
