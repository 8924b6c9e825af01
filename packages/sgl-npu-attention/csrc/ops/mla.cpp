#include <vector>

#include "ops/paged.h"

namespace sgl_npu_attention {

void decode_mla(const Tensor& q, const Tensor& kv_nope_cache, const Tensor& kv_rope_cache, const Tensor& block_table,
                const Tensor& seq_lens, double sm_scale, Tensor out) {
  check_sm_scale(sm_scale);
  check_cpu(q, "q");
  STD_TORCH_CHECK(q.dim() == 3, "q must be [batch, q_heads, latent_dim + rope_dim], got ", q.dim(), " dims");
  check_last_dim_contiguous(q, "q");
  check_cache(kv_nope_cache, "kv_nope_cache");
  check_cache(kv_rope_cache, "kv_rope_cache");
  STD_TORCH_CHECK(kv_nope_cache.size(2) == 1, "kv_nope_cache must have one (latent) kv head, got ",
                  kv_nope_cache.size(2));
  STD_TORCH_CHECK(kv_rope_cache.size(0) == kv_nope_cache.size(0) && kv_rope_cache.size(1) == kv_nope_cache.size(1) &&
                      kv_rope_cache.size(2) == 1,
                  "kv_rope_cache must have kv_nope_cache's blocks, page size and one kv head");
  const int64_t batch = q.size(0), q_heads = q.size(1), dl = kv_nope_cache.size(3), dr = kv_rope_cache.size(3);
  STD_TORCH_CHECK(q.size(2) == dl + dr, "q's last dim must be the latent dim ", dl, " + the rope dim ", dr, ", got ",
                  q.size(2));
  STD_TORCH_CHECK(q_heads > 0, "q must have at least one head");
  const DType dtype = float_dtype(q, "q");
  check_same_dtype(kv_nope_cache, q, "kv_nope_cache", "q");
  check_same_dtype(kv_rope_cache, q, "kv_rope_cache", "q");
  check_cpu(out, "out");
  STD_TORCH_CHECK(out.dim() == 3 && out.size(0) == batch && out.size(1) == q_heads && out.size(2) == dl,
                  "out must have shape [", batch, ", ", q_heads, ", ", dl, "]");
  check_last_dim_contiguous(out, "out");
  check_disjoint(out, "out");
  check_same_dtype(out, q, "out", "q");
  PagedCall call(block_table, seq_lens, batch, kv_nope_cache.size(0), kv_nope_cache.size(1), out);
  STD_TORCH_CHECK(call.requests == batch, "block_table must have a row per query token (", batch, "), got ",
                  call.requests);
  AttentionArgs& a = call.args;
  a.dtype = dtype;
  a.q_heads = q_heads;
  a.kv_heads = 1;
  a.head_dim = dl + dr;
  a.head_dim_v = dl;
  a.q = q.const_data_ptr();
  a.q_token_stride = q.stride(0);
  a.q_head_stride = q.stride(1);
  a.k_cache = kv_nope_cache.const_data_ptr();
  a.k_block_stride = kv_nope_cache.stride(0);
  a.k_token_stride = kv_nope_cache.stride(1);
  a.k_rope_cache = kv_rope_cache.const_data_ptr();
  a.k_rope_block_stride = kv_rope_cache.stride(0);
  a.k_rope_token_stride = kv_rope_cache.stride(1);
  a.sm_scale = float(sm_scale);
  std::vector<int64_t> first(batch + 1);
  for (int64_t b = 0; b < batch; ++b) {
    call.set_range(b, b, call.seq_lens[b], -1);
    first[b + 1] = b + 1;
  }
  const int64_t elem = dtype == DType::f32 ? 4 : 2;
  call.run(first, 1, (dl + dr) * elem, [](const AttentionArgs& args, int64_t begin, int64_t end) {
    SGL_NPU_ISA_CALL(mla_partial, args, begin, end);
  });
}

}  // namespace sgl_npu_attention
