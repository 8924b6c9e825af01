// Framework-free CPU kernels of sgl-npu-attention, compiled once per ISA (see sgl_npu_core/isa.h).
#pragma once
#include <cstdint>

#include "sgl_npu_core/dtype.h"
#include "sgl_npu_core/isa.h"

namespace sgl_npu_attention {

using sgl_npu_core::DType;

// Paged attention of query tokens that each see a range of their request's keys: query token t (of request
// query_req[t]) attends keys [key_lo[t], key_hi[t]) with every query head. Decode is one token per request;
// prefill / extend gives each token its causal limit.
//
// Work: tasks (tile, KV head, split). A tile is a few query tokens of one request; the task scores the tile's
// tokens x the `group = Hq / Hkv` query heads sharing the KV head against blocks of keys inside one page,
// converting each K and V row to fp32 once for all of them, over the split's keys [lo + split * split_keys, ...)
// of the tile's union range; attention_merge combines the splits (and the sink logit) by log-sum-exp.
struct AttentionArgs {
  DType dtype;  // of q, the caches and out
  int64_t q_heads, kv_heads, head_dim, head_dim_v, page_size;
  const void* q;
  int64_t q_token_stride, q_head_stride;
  const void* k_cache;
  int64_t k_block_stride, k_token_stride, k_head_stride;
  const void* v_cache;
  int64_t v_block_stride, v_token_stride, v_head_stride;
  // decode_mla: a key is [k_cache row (head_dim_v) | k_rope_cache row (head_dim - head_dim_v)], its value the
  // k_cache row (one latent KV head; v_cache unused).
  const void* k_rope_cache;
  int64_t k_rope_block_stride, k_rope_token_stride;
  const int32_t* block_table;  // checked: every page a request uses is a block of the cache
  int64_t block_table_stride;
  const int64_t* query_req;  // [T]
  const int64_t* key_lo;     // [T]
  const int64_t* key_hi;     // [T]
  const int64_t* tiles;      // [num_tiles, 2]: first and end query token (of one request)
  int64_t num_tiles;
  float sm_scale;
  const float* sinks;  // optional [Hq]
  int64_t split_keys, splits;
  int64_t kv_heads_per_task;  // a divisor of kv_heads: the heads one task attends together, block by block
  float* partial;             // [T, Hq, splits, Dv + 2]: acc[Dv], max, sum
  void* out;
  int64_t out_token_stride, out_head_stride;
};

// DeepSeek-V3.2 indexer: token t scores keys s < key_hi[t] of its request, score = sum_h w[t, h] relu(q[t, h] . k[s]),
// and keeps the sparse_count best. Scores of one wave of consecutive tiles go to `scores` (token t's from
// score_offset[t]) by (tile, split) tasks; then one top-k task per token.
struct IndexerArgs {
  DType dtype, weights_dtype;  // of q and k_cache; of weights (q's or f32)
  int64_t heads, head_dim, page_size, sparse_count;
  const void* q;
  int64_t q_token_stride, q_head_stride;
  const void* k_cache;
  int64_t k_block_stride, k_token_stride;
  const void* weights;
  int64_t weights_stride;
  const int32_t* block_table;  // checked: every page a request uses is a block of the cache
  int64_t block_table_stride;
  const int64_t* query_req;  // [T]
  const int64_t* key_hi;     // [T]
  const int64_t* tiles;      // [tiles of the wave, 2]: first and end token (of one request)
  int64_t split_keys, splits;
  float* scores;
  const int64_t* score_offset;  // [T]
  int32_t* out;
  int64_t out_stride;
};

SGL_NPU_DECLARE_PER_ISA(void indexer_scores(const IndexerArgs& a, int64_t task_begin, int64_t task_end))
SGL_NPU_DECLARE_PER_ISA(void indexer_topk(const IndexerArgs& a, int64_t token_begin, int64_t token_end))

// out[m, h] = a[m, h] @ b[h] for a [M, H, K], b [H, K, N], out [M, H, N] (last dims contiguous), fp32 accumulation.
// Tasks: (head, block of m_block rows), head-major.
struct BmmArgs {
  DType dtype;  // of a, b and out
  int64_t m, heads, k, n, m_block;
  const void* a;
  int64_t a_stride0, a_stride1;
  const void* b;
  int64_t b_stride0, b_stride1;
  void* out;
  int64_t out_stride0, out_stride1;
};

SGL_NPU_DECLARE_PER_ISA(void batch_matmul(const BmmArgs& p, int64_t task_begin, int64_t task_end))
SGL_NPU_DECLARE_PER_ISA(void attention_partial(const AttentionArgs& a, int64_t task_begin, int64_t task_end))
// decode_mla's partial pass (same tasks and partial layout as attention_partial, one token per tile): all query heads
// against blocks of keys, as two small GEMMs per block, so each key row is read and converted once.
SGL_NPU_DECLARE_PER_ISA(void mla_partial(const AttentionArgs& a, int64_t task_begin, int64_t task_end))
SGL_NPU_DECLARE_PER_ISA(void attention_merge(const AttentionArgs& a, int64_t row_begin, int64_t row_end))

// mla_preprocess's row-wise stages. quant_rows: per row, optionally RMSNorm(gamma) (+ beta) rounded to the dtype,
// then int8 codes, per token symmetric (row_scale = max|y| / 127) or per tensor asymmetric (row_scale = 1).
struct QuantRowsArgs {
  DType dtype;  // of x, gamma and beta
  int64_t cols;
  const void* x;
  int64_t x_stride;
  const void* gamma;  // optional [cols]
  const void* beta;   // optional [cols]
  float eps;
  bool per_tensor;
  float scale, offset;  // per tensor: code = round(y / scale + offset)
  int8_t* codes;
  int64_t codes_stride;
  float* row_scale;
};

// cache_write: row t's RMSNorm(gamma) latent and rope_half(k_pe) go to the caches at slots[t] (checked in range).
struct CacheWriteArgs {
  DType dtype;  // of every tensor but slots
  int64_t latent_dim, rope_dim, page_size;
  const void* latent;
  int64_t latent_stride;
  const void* k_pe;
  int64_t k_pe_stride;
  const void* gamma;
  float eps;
  const void* cos;
  int64_t cos_stride;
  const void* sin;
  int64_t sin_stride;
  const int32_t* slots;
  void* kv_cache;
  int64_t kv_block_stride, kv_token_stride;
  void* kv_cache_rope;
  int64_t rope_block_stride, rope_token_stride;
};

// int8_matmul: out[t, c] = (float(codes[t] . weight[c] + bias[c]) * descale[c]) * row_scale[t], exact int32 sums,
// rounded once to the output dtype. Tasks: (block of m_block tokens, block of n_block channels), token-block-major.
struct Int8MatmulArgs {
  DType dtype;  // of out
  int64_t m, n, k, m_block, n_block;
  const int8_t* codes;  // [m, k] rows codes_stride apart
  int64_t codes_stride;
  const int8_t* weight;    // [n, k] contiguous
  const float* descale;    // [n]
  const float* row_scale;  // [m]
  const int32_t* bias;     // optional [n]
  void* out;
  int64_t out_stride;
};

SGL_NPU_DECLARE_PER_ISA(void int8_matmul(const Int8MatmulArgs& a, int64_t task_begin, int64_t task_end))
SGL_NPU_DECLARE_PER_ISA(void quant_rows(const QuantRowsArgs& a, int64_t row_begin, int64_t row_end))
SGL_NPU_DECLARE_PER_ISA(void cache_write(const CacheWriteArgs& a, int64_t row_begin, int64_t row_end))

}  // namespace sgl_npu_attention
