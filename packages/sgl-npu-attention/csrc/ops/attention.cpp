#include <vector>

#include "ops/paged.h"

namespace sgl_npu_attention {

namespace {

// Query rows (tokens x query heads of one KV head) scored together by one task: the bigger the tile, the more rows
// share each block's K^T and fp32 V (converted once per tile); 128 ran ~5-10% faster than 64 in interleaved runs.
constexpr int64_t kTileQueryRows = 128;

// q, the K and V caches and out of decode / extend, checked; the call's kernel arguments filled from them.
PagedCall gqa_call(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                   const Tensor& seq_lens, double sm_scale, const std::optional<Tensor>& sinks, const Tensor& out) {
  check_sm_scale(sm_scale);
  check_cpu(q, "q");
  STD_TORCH_CHECK(q.dim() == 3, "q must be [tokens, q_heads, head_dim], got ", q.dim(), " dims");
  check_last_dim_contiguous(q, "q");
  check_cache(k_cache, "k_cache");
  check_cache(v_cache, "v_cache");
  const int64_t tokens = q.size(0), q_heads = q.size(1), d = q.size(2), kv_heads = k_cache.size(2);
  const int64_t dv = v_cache.size(3), blocks = k_cache.size(0);
  STD_TORCH_CHECK(k_cache.size(3) == d, "k_cache must have q's head_dim ", d, ", got ", k_cache.size(3));
  STD_TORCH_CHECK(v_cache.size(0) == blocks && v_cache.size(1) == k_cache.size(1) && v_cache.size(2) == kv_heads,
                  "v_cache must have k_cache's blocks, page size and kv heads");
  STD_TORCH_CHECK(q_heads > 0 && q_heads % kv_heads == 0, "q heads (", q_heads, ") must be a multiple of kv heads (",
                  kv_heads, ")");
  const DType dtype = float_dtype(q, "q");
  check_same_dtype(k_cache, q, "k_cache", "q");
  check_same_dtype(v_cache, q, "v_cache", "q");
  check_cpu(out, "out");
  STD_TORCH_CHECK(out.dim() == 3 && out.size(0) == tokens && out.size(1) == q_heads && out.size(2) == dv,
                  "out must have shape [", tokens, ", ", q_heads, ", ", dv, "]");
  check_last_dim_contiguous(out, "out");
  check_disjoint(out, "out");
  check_same_dtype(out, q, "out", "q");
  const float* sink_logits =
      sinks.has_value() ? checked_vector<float>(*sinks, q_heads, ScalarType::Float, "sinks") : nullptr;
  if (sinks.has_value()) check_apart(out, *sinks, "out", "sinks");  // read by every row's merge, out written per row
  PagedCall call(block_table, seq_lens, tokens, blocks, k_cache.size(1), out);
  AttentionArgs& a = call.args;
  a.dtype = dtype;
  a.sinks = sink_logits;
  a.q_heads = q_heads;
  a.kv_heads = kv_heads;
  a.head_dim = d;
  a.head_dim_v = dv;
  a.q = q.const_data_ptr();
  a.q_token_stride = q.stride(0);
  a.q_head_stride = q.stride(1);
  a.k_cache = k_cache.const_data_ptr();
  a.k_block_stride = k_cache.stride(0);
  a.k_token_stride = k_cache.stride(1);
  a.k_head_stride = k_cache.stride(2);
  a.v_cache = v_cache.const_data_ptr();
  a.v_block_stride = v_cache.stride(0);
  a.v_token_stride = v_cache.stride(1);
  a.v_head_stride = v_cache.stride(2);
  a.sm_scale = float(sm_scale);
  return call;
}

void run_gqa(PagedCall& call, const std::vector<int64_t>& request_first) {
  const AttentionArgs& a = call.args;
  const int64_t group = a.q_heads / a.kv_heads, elem = a.dtype == DType::f32 ? 4 : 2;
  call.run(request_first, std::max<int64_t>(1, kTileQueryRows / group), (a.head_dim + a.head_dim_v) * elem,
           [](const AttentionArgs& args, int64_t begin, int64_t end) {
             SGL_NPU_ISA_CALL(attention_partial, args, begin, end);
           });
}

}  // namespace

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& seq_lens, double sm_scale, const std::optional<Tensor>& sinks,
                      int64_t sliding_window, Tensor out) {
  PagedCall call = gqa_call(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, out);
  STD_TORCH_CHECK(call.requests == call.tokens, "block_table must have a row per query token (", call.tokens, "), got ",
                  call.requests);
  std::vector<int64_t> first(call.requests + 1);
  for (int64_t b = 0; b < call.requests; ++b) {
    call.set_range(b, b, call.seq_lens[b], sliding_window);
    first[b + 1] = b + 1;
  }
  run_gqa(call, first);
}

void extend_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& cu_seqlens_q, const Tensor& seq_lens, double sm_scale, bool causal,
                      const std::optional<Tensor>& sinks, int64_t sliding_window, Tensor out) {
  PagedCall call = gqa_call(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, out);
  const int32_t* cu = check_cu_seqlens(cu_seqlens_q, call.requests, call.tokens, call.seq_lens);
  std::vector<int64_t> first(call.requests + 1);
  for (int64_t b = 0; b < call.requests; ++b) {
    const int64_t q_len = int64_t(cu[b + 1]) - cu[b], len = call.seq_lens[b];
    first[b + 1] = cu[b + 1];
    for (int64_t i = 0; i < q_len; ++i)
      call.set_range(cu[b] + i, b, causal ? len - q_len + i + 1 : len, sliding_window);
  }
  run_gqa(call, first);
}

}  // namespace sgl_npu_attention
