#include "ops/paged.h"

#include <cmath>

namespace sgl_npu_attention {

namespace {

constexpr int64_t kSplitKeys = 1024, kEnoughTasks = 64;

}  // namespace

void check_sm_scale(double sm_scale) {
  STD_TORCH_CHECK(std::isfinite(sm_scale) && std::isfinite(float(sm_scale)),
                  "sm_scale must be finite (in float32), got ", sm_scale);
}

void check_cache(const Tensor& t, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 4, name, " must be [num_blocks, page_size, kv_heads, head_dim], got ", t.dim(), " dims");
  STD_TORCH_CHECK(t.size(1) > 0 && t.size(2) > 0 && t.size(3) > 0, name, " must have non-empty pages, heads and dims");
  check_last_dim_contiguous(t, name);
}

const int32_t* check_pages(const Tensor& block_table, const Tensor& seq_lens_t, int64_t blocks, int64_t page) {
  check_cpu(block_table, "block_table");
  check_dtype(block_table, ScalarType::Int, "block_table");
  STD_TORCH_CHECK(block_table.dim() == 2, "block_table must be [requests, max_pages]");
  check_last_dim_contiguous(block_table, "block_table");
  const int64_t requests = block_table.size(0), max_pages = block_table.size(1);
  const int32_t* seq_lens = checked_vector<int32_t>(seq_lens_t, requests, ScalarType::Int, "seq_lens");
  const int32_t* table = static_cast<const int32_t*>(block_table.const_data_ptr());
  for (int64_t b = 0; b < requests; ++b) {
    const int64_t len = seq_lens[b];
    STD_TORCH_CHECK(0 <= len && len <= max_pages * page, "seq_lens[", b, "] = ", len, " is outside [0, ", max_pages,
                    " pages x ", page, "]");
    for (int64_t j = 0; j < (len + page - 1) / page; ++j) {
      const int64_t id = table[b * block_table.stride(0) + j];
      STD_TORCH_CHECK(0 <= id && id < blocks, "block_table[", b, ", ", j, "] = ", id, " is not a block of the cache (",
                      blocks, " blocks)");
    }
  }
  return seq_lens;
}

const int32_t* check_cu_seqlens(const Tensor& cu_seqlens_q, int64_t requests, int64_t tokens, const int32_t* seq_lens) {
  const int32_t* cu = checked_vector<int32_t>(cu_seqlens_q, requests + 1, ScalarType::Int, "cu_seqlens_q");
  STD_TORCH_CHECK(cu[0] == 0 && cu[requests] == tokens, "cu_seqlens_q must run from 0 to the ", tokens,
                  " query tokens, got ", cu[0], " .. ", cu[requests]);
  for (int64_t b = 0; b < requests; ++b) {
    const int64_t q_len = int64_t(cu[b + 1]) - cu[b];
    STD_TORCH_CHECK(0 <= q_len && q_len <= seq_lens[b], "request ", b, " has ", q_len,
                    " query tokens (cu_seqlens_q) but ", seq_lens[b],
                    " keys (seq_lens): the new tokens must be part of seq_lens");
  }
  return cu;
}

int64_t key_splits(int64_t tasks, int64_t widest_range) {
  return tasks >= kEnoughTasks ? 1 : std::max<int64_t>(1, (widest_range + kSplitKeys - 1) / kSplitKeys);
}

PagedCall::PagedCall(const Tensor& block_table, const Tensor& seq_lens_t, int64_t tokens_, int64_t blocks,
                     int64_t page_size, const Tensor& out)
    : tokens(tokens_) {
  seq_lens = check_pages(block_table, seq_lens_t, blocks, page_size);
  requests = block_table.size(0);
  args.page_size = page_size;
  args.block_table = static_cast<const int32_t*>(block_table.const_data_ptr());
  args.block_table_stride = block_table.stride(0);
  args.out = out.mutable_data_ptr();
  args.out_token_stride = out.stride(0);
  args.out_head_stride = out.stride(1);
  query_req.resize(tokens);
  key_lo.resize(tokens);
  key_hi.resize(tokens);
}

}  // namespace sgl_npu_attention
