// Framework-free CPU kernels of sgl-npu-attention, compiled once per ISA (see sgl_npu_core/isa.h).
#pragma once
#include <cstdint>

#include "sgl_npu_core/dtype.h"
#include "sgl_npu_core/isa.h"

namespace sgl_npu_attention {

using sgl_npu_core::DType;

// Paged decode attention, split over the KV axis: task (b, kv head, split) attends the `group = Hq / Hkv` query
// heads of one KV head over keys [lo + split * split_keys, ...) of sequence b (lo = seq_len - sliding_window with
// a window, else 0), reading each K/V row once for the whole group, and leaves in `partial` its unnormalized
// output, running max and sum; decode_merge combines the splits (and the sink logit) by log-sum-exp.
struct DecodeArgs {
  DType dtype;  // of q, the caches and out
  int64_t batch, q_heads, kv_heads, head_dim, head_dim_v, page_size;
  const void* q;
  int64_t q_batch_stride, q_head_stride;
  const void* k_cache;
  int64_t k_block_stride, k_token_stride, k_head_stride;
  const void* v_cache;
  int64_t v_block_stride, v_token_stride, v_head_stride;
  const int32_t* block_table;  // checked: every page a sequence uses is a block of the cache
  int64_t block_table_stride;
  const int32_t* seq_lens;
  float sm_scale;
  const float* sinks;      // optional [Hq]
  int64_t sliding_window;  // <= 0: every key
  int64_t split_keys, splits;
  float* partial;  // [B, Hkv, splits, group, Dv + 2]: acc[Dv], max, sum
  void* out;
  int64_t out_batch_stride, out_head_stride;
};

SGL_NPU_DECLARE_PER_ISA(void decode_partial(const DecodeArgs& a, int64_t task_begin, int64_t task_end))
SGL_NPU_DECLARE_PER_ISA(void decode_merge(const DecodeArgs& a, int64_t row_begin, int64_t row_end))

}  // namespace sgl_npu_attention
