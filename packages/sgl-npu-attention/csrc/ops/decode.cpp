#include <algorithm>
#include <vector>

#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace sgl_npu_attention {

using namespace sgl_npu_core;

namespace {

// Keys per split task: long sequences are cut so that a batch of one still spreads over the cores; the merge
// costs one extra pass over [Hq, Dv] per split.
constexpr int64_t kSplitKeys = 1024;

void check_last_dim_contiguous(const Tensor& t, const char* name) {
  STD_TORCH_CHECK(t.stride(t.dim() - 1) == 1 || t.size(t.dim() - 1) == 1, name, " must be contiguous in its last dim");
}

// A paged cache [num_blocks, page_size, kv_heads, dim].
void check_cache(const Tensor& t, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 4, name, " must be [num_blocks, page_size, kv_heads, head_dim], got ", t.dim(), " dims");
  STD_TORCH_CHECK(t.size(1) > 0 && t.size(2) > 0 && t.size(3) > 0, name, " must have non-empty pages, heads and dims");
  check_last_dim_contiguous(t, name);
}

}  // namespace

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& seq_lens, double sm_scale, const std::optional<Tensor>& sinks,
                      int64_t sliding_window, Tensor out) {
  check_cpu(q, "q");
  STD_TORCH_CHECK(q.dim() == 3, "q must be [batch, q_heads, head_dim], got ", q.dim(), " dims");
  check_last_dim_contiguous(q, "q");
  check_cache(k_cache, "k_cache");
  check_cache(v_cache, "v_cache");
  const int64_t batch = q.size(0), q_heads = q.size(1), d = q.size(2);
  const int64_t blocks = k_cache.size(0), page = k_cache.size(1), kv_heads = k_cache.size(2), dv = v_cache.size(3);
  STD_TORCH_CHECK(k_cache.size(3) == d, "k_cache must have q's head_dim ", d, ", got ", k_cache.size(3));
  STD_TORCH_CHECK(v_cache.size(0) == blocks && v_cache.size(1) == page && v_cache.size(2) == kv_heads,
                  "v_cache must have k_cache's blocks, page size and kv heads");
  STD_TORCH_CHECK(q_heads > 0 && q_heads % kv_heads == 0, "q heads (", q_heads, ") must be a multiple of kv heads (",
                  kv_heads, ")");
  const DType dtype = float_dtype(q, "q");
  check_same_dtype(k_cache, q, "k_cache", "q");
  check_same_dtype(v_cache, q, "v_cache", "q");
  check_cpu(out, "out");
  STD_TORCH_CHECK(out.dim() == 3 && out.size(0) == batch && out.size(1) == q_heads && out.size(2) == dv,
                  "out must have shape [", batch, ", ", q_heads, ", ", dv, "]");
  check_last_dim_contiguous(out, "out");
  check_same_dtype(out, q, "out", "q");
  check_cpu(block_table, "block_table");
  check_dtype(block_table, ScalarType::Int, "block_table");
  STD_TORCH_CHECK(block_table.dim() == 2 && block_table.size(0) == batch, "block_table must be [", batch,
                  ", max_pages]");
  check_last_dim_contiguous(block_table, "block_table");
  check_cpu(seq_lens, "seq_lens");
  check_dtype(seq_lens, ScalarType::Int, "seq_lens");
  STD_TORCH_CHECK(seq_lens.dim() == 1 && seq_lens.size(0) == batch, "seq_lens must have shape [", batch, "]");
  check_contiguous(seq_lens, "seq_lens");
  const float* sink_ptr = nullptr;
  if (sinks.has_value()) {
    check_cpu(*sinks, "sinks");
    check_dtype(*sinks, ScalarType::Float, "sinks");
    STD_TORCH_CHECK(sinks->dim() == 1 && sinks->size(0) == q_heads, "sinks must have shape [", q_heads, "]");
    check_contiguous(*sinks, "sinks");
    sink_ptr = static_cast<const float*>(sinks->const_data_ptr());
  }

  // Every page a sequence reads must be a block of the cache: checked before any KV memory is read.
  const int32_t* lens = static_cast<const int32_t*>(seq_lens.const_data_ptr());
  const int32_t* table = static_cast<const int32_t*>(block_table.const_data_ptr());
  const int64_t max_pages = block_table.size(1), table_stride = block_table.stride(0);
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t len = lens[b];
    STD_TORCH_CHECK(0 <= len && len <= max_pages * page, "seq_lens[", b, "] = ", len, " is outside [0, ", max_pages,
                    " pages x ", page, "]");
    for (int64_t j = 0; j < (len + page - 1) / page; ++j) {
      const int64_t block = table[b * table_stride + j];
      STD_TORCH_CHECK(0 <= block && block < blocks, "block_table[", b, ", ", j, "] = ", block,
                      " is not a block of the cache (", blocks, " blocks)");
    }
    longest = std::max(longest, sliding_window > 0 ? std::min(len, sliding_window) : len);
  }

  DecodeArgs a{};
  a.dtype = dtype;
  a.batch = batch;
  a.q_heads = q_heads;
  a.kv_heads = kv_heads;
  a.head_dim = d;
  a.head_dim_v = dv;
  a.page_size = page;
  a.q = q.const_data_ptr();
  a.q_batch_stride = q.stride(0);
  a.q_head_stride = q.stride(1);
  a.k_cache = k_cache.const_data_ptr();
  a.k_block_stride = k_cache.stride(0);
  a.k_token_stride = k_cache.stride(1);
  a.k_head_stride = k_cache.stride(2);
  a.v_cache = v_cache.const_data_ptr();
  a.v_block_stride = v_cache.stride(0);
  a.v_token_stride = v_cache.stride(1);
  a.v_head_stride = v_cache.stride(2);
  a.block_table = table;
  a.block_table_stride = table_stride;
  a.seq_lens = lens;
  a.sm_scale = float(sm_scale);
  a.sinks = sink_ptr;
  a.sliding_window = sliding_window;
  a.split_keys = kSplitKeys;
  a.splits = std::max<int64_t>(1, (longest + kSplitKeys - 1) / kSplitKeys);
  a.out = out.mutable_data_ptr();
  a.out_batch_stride = out.stride(0);
  a.out_head_stride = out.stride(1);
  if (batch == 0) return;
  std::vector<float> partial(batch * q_heads * a.splits * (dv + 2));
  a.partial = partial.data();
  const int64_t elem = dtype == DType::f32 ? 4 : 2;
  const int64_t task_bytes = std::min(longest, kSplitKeys) * (d + dv) * elem;
  parallel_rows(batch * kv_heads * a.splits, task_bytes,
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(decode_partial, a, begin, end); });
  parallel_rows(batch * q_heads, (dv + 2) * a.splits * 4,
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(decode_merge, a, begin, end); });
}

}  // namespace sgl_npu_attention
