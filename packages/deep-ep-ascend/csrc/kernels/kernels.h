// Framework-free CPU kernels of deep-ep-ascend, compiled once per ISA (see sgl_npu_core/isa.h).
#pragma once
#include <cstdint>

#include "sgl_npu_core/dtype.h"
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

// Normal-mode rows one rank sends, destination-major then token ascending: send_token, and each row's top-k as
// local expert ids on its destination (-1 for experts elsewhere) with the weights (0 there).
struct SendRowsArgs {
  const bool* is_token_in_rank;  // [N, R]
  const void* topk_idx;          // [N, K] or null; entries checked in [-1, E)
  bool topk_int64;
  const float* topk_weights;  // [N, K] (rows topk_stride apart, like topk_idx)
  int64_t tokens, ranks, topk, topk_stride, weights_stride, experts_per_rank;
  int64_t* send_token;  // [M]
  void* idx_rows;       // [M, K], topk_idx's dtype
  float* weight_rows;   // [M, K]
};

// Low-latency routing of one rank's messages (one per valid (token, k)), ordered by expert, then token: each lands in
// row (e % L) * slots + (rows earlier source ranks put in expert e) + (its place among this rank's rows for e).
struct RoutesArgs {
  const void* topk_idx;  // [N, K], entries checked in [-1, E)
  bool topk_int64;
  int64_t tokens, topk, topk_stride, num_experts, local_experts, slots, rank;
  const int64_t* first;      // [E]: this rank's first message of each expert (prefix of its counts)
  const int64_t* before_me;  // [E]: rows of each expert filled by earlier source ranks
  int64_t* token;            // [M]
  int32_t* source;           // [M, 2]: (token, token * K + k), the row's src_info and where it returns to
  int64_t* dst_row;          // [M]
  int64_t* message_row;      // [N * K]: dst_row of each (token, k), -1 where there is no expert
  // [N * K]: where combine finds the row of (token, k): message_row when the expert is on this rank (a row of the
  // experts' [L * slots] output), else L * slots + token * K + k (the row its peer returned); -1: no expert.
  int64_t* combine_row;
};

// Low-latency combine's returns from one rank: its received rows (in [L, slots], expert i's from source p at rows
// begin..begin+count of layout_range[i, p]) grouped by source rank, then expert, then row, with the row each
// lands in on its source (recv_slot).
struct ReturnsArgs {
  const int64_t* layout_range;  // [L, R]: (begin << 32) | count, checked to fit in slots
  const int32_t* recv_slot;     // [L, slots] with strides (row, col) in elements
  int64_t local_experts, ranks, slots, slot_row_stride, slot_col_stride;
  int64_t* rows;        // [sum of counts]: rows of the experts' [L * slots] output
  int64_t* returned;    // [sum of counts]: recv_slot of each
  int64_t* per_source;  // [R]: how many of the rows go back to each source
};

// dst row dst_rows[i] = src row src_rows[i] for i < rows (a null index means i), `row_bytes` bytes each. The
// indices are checked by the op; the destination may be another process's shared memory.
struct CopyRowsArgs {
  const void* src;
  void* dst;
  const int64_t* src_rows;
  const int64_t* dst_rows;
  int64_t rows, row_bytes, src_stride, dst_stride;  // strides in bytes
};

// out[t] = bias[t] + sum over s of weights[t, s] * row(rows[t, s]), in fp32 and in slot order (a fixed order,
// so reruns are bit-identical). Row i < a_rows is a[i] (a_stride 1: the row starting at element i of a flat a),
// else b[i - a_rows]; -1 skips the slot.
struct ReduceRowsArgs {
  sgl_npu_core::DType dtype;  // of a and b
  bool out_fp32;              // out is fp32 (else a's dtype)
  const void* a;
  const void* b;
  void* out;
  const int64_t* rows;   // [tokens, slots]
  const float* weights;  // [tokens, slots] or null (all 1)
  const float* bias;     // [tokens, hidden] rows bias_stride apart, or null
  int64_t tokens, slots, hidden, a_rows, a_stride, b_stride, out_stride, bias_stride;  // strides in elements
};

SGL_NPU_DECLARE_PER_ISA(void dispatch_layout(const LayoutArgs& a))
SGL_NPU_DECLARE_PER_ISA(void low_latency_routes(const RoutesArgs& a))
SGL_NPU_DECLARE_PER_ISA(void low_latency_returns(const ReturnsArgs& a))
SGL_NPU_DECLARE_PER_ISA(void send_rows(const SendRowsArgs& a))
// Per-token symmetric int8: scale = max|x| / 127 (as 1 / (127 / (max|x| + 1e-12))), q = round-half-even(x / scale).
struct QuantizeInt8Args {
  sgl_npu_core::DType dtype;  // of x
  const void* x;
  int8_t* q;
  float* scales;                               // [tokens]
  int64_t tokens, hidden, x_stride, q_stride;  // strides in elements
};

// All work on rows / tokens [begin, end), so the ops can split them over threads.
SGL_NPU_DECLARE_PER_ISA(void copy_rows(const CopyRowsArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void reduce_rows(const ReduceRowsArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void quantize_int8(const QuantizeInt8Args& a, int64_t begin, int64_t end))

}  // namespace deep_ep
