#include <algorithm>
#include <vector>

#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace sgl_npu_attention {

using namespace sgl_npu_core;

namespace {

// Keys per split task: long ranges are cut so that a batch of one still spreads over the cores; the merge
// costs one extra pass over [Hq, Dv] per split. Splitting stops once there are this many tile x head tasks.
constexpr int64_t kSplitKeys = 1024, kEnoughTasks = 64;
// Query rows (tokens x query heads of one KV head) scored together by one task.
constexpr int64_t kTileRows = 64;

// A paged cache [num_blocks, page_size, kv_heads, dim].
void check_cache(const Tensor& t, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 4, name, " must be [num_blocks, page_size, kv_heads, head_dim], got ", t.dim(), " dims");
  STD_TORCH_CHECK(t.size(1) > 0 && t.size(2) > 0 && t.size(3) > 0, name, " must have non-empty pages, heads and dims");
  check_last_dim_contiguous(t, name);
}

// The checked tensors every paged-attention op shares, and the kernel arguments they fill.
struct PagedCall {
  AttentionArgs args{};
  int64_t tokens, requests, blocks;
  const int32_t* seq_lens;
  std::vector<int64_t> query_req, key_lo, key_hi, tiles;

  PagedCall(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
            const Tensor& seq_lens_t, double sm_scale, const std::optional<Tensor>& sinks, const Tensor& out) {
    check_cpu(q, "q");
    STD_TORCH_CHECK(q.dim() == 3, "q must be [tokens, q_heads, head_dim], got ", q.dim(), " dims");
    check_last_dim_contiguous(q, "q");
    check_cache(k_cache, "k_cache");
    check_cache(v_cache, "v_cache");
    tokens = q.size(0);
    const int64_t q_heads = q.size(1), d = q.size(2), kv_heads = k_cache.size(2), dv = v_cache.size(3);
    blocks = k_cache.size(0);
    STD_TORCH_CHECK(k_cache.size(3) == d, "k_cache must have q's head_dim ", d, ", got ", k_cache.size(3));
    STD_TORCH_CHECK(v_cache.size(0) == blocks && v_cache.size(1) == k_cache.size(1) && v_cache.size(2) == kv_heads,
                    "v_cache must have k_cache's blocks, page size and kv heads");
    STD_TORCH_CHECK(q_heads > 0 && q_heads % kv_heads == 0, "q heads (", q_heads, ") must be a multiple of kv heads (",
                    kv_heads, ")");
    args.dtype = float_dtype(q, "q");
    check_same_dtype(k_cache, q, "k_cache", "q");
    check_same_dtype(v_cache, q, "v_cache", "q");
    check_cpu(out, "out");
    STD_TORCH_CHECK(out.dim() == 3 && out.size(0) == tokens && out.size(1) == q_heads && out.size(2) == dv,
                    "out must have shape [", tokens, ", ", q_heads, ", ", dv, "]");
    check_last_dim_contiguous(out, "out");
    check_same_dtype(out, q, "out", "q");
    check_cpu(block_table, "block_table");
    check_dtype(block_table, ScalarType::Int, "block_table");
    STD_TORCH_CHECK(block_table.dim() == 2, "block_table must be [requests, max_pages]");
    check_last_dim_contiguous(block_table, "block_table");
    requests = block_table.size(0);
    seq_lens = checked_vector<int32_t>(seq_lens_t, requests, ScalarType::Int, "seq_lens");
    if (sinks.has_value()) args.sinks = checked_vector<float>(*sinks, q_heads, ScalarType::Float, "sinks");
    // Every page a request reads must be a block of the cache: checked before any KV memory is read.
    const int64_t page = k_cache.size(1), max_pages = block_table.size(1);
    const int32_t* table = static_cast<const int32_t*>(block_table.const_data_ptr());
    for (int64_t b = 0; b < requests; ++b) {
      const int64_t len = seq_lens[b];
      STD_TORCH_CHECK(0 <= len && len <= max_pages * page, "seq_lens[", b, "] = ", len, " is outside [0, ", max_pages,
                      " pages x ", page, "]");
      for (int64_t j = 0; j < (len + page - 1) / page; ++j) {
        const int64_t id = table[b * block_table.stride(0) + j];
        STD_TORCH_CHECK(0 <= id && id < blocks, "block_table[", b, ", ", j, "] = ", id,
                        " is not a block of the cache (", blocks, " blocks)");
      }
    }
    args.q_heads = q_heads;
    args.kv_heads = kv_heads;
    args.head_dim = d;
    args.head_dim_v = dv;
    args.page_size = page;
    args.q = q.const_data_ptr();
    args.q_token_stride = q.stride(0);
    args.q_head_stride = q.stride(1);
    args.k_cache = k_cache.const_data_ptr();
    args.k_block_stride = k_cache.stride(0);
    args.k_token_stride = k_cache.stride(1);
    args.k_head_stride = k_cache.stride(2);
    args.v_cache = v_cache.const_data_ptr();
    args.v_block_stride = v_cache.stride(0);
    args.v_token_stride = v_cache.stride(1);
    args.v_head_stride = v_cache.stride(2);
    args.block_table = table;
    args.block_table_stride = block_table.stride(0);
    args.sm_scale = float(sm_scale);
    args.out = out.mutable_data_ptr();
    args.out_token_stride = out.stride(0);
    args.out_head_stride = out.stride(1);
    query_req.resize(tokens);
    key_lo.resize(tokens);
    key_hi.resize(tokens);
  }

  // Query token t of `request` sees keys [lo, hi): set it (hi within the request's keys).
  void set_range(int64_t t, int64_t request, int64_t hi, int64_t window) {
    query_req[t] = request;
    key_hi[t] = hi;
    key_lo[t] = window > 0 ? std::max<int64_t>(0, hi - window) : 0;
  }

  // Tiles of each request's consecutive tokens [first, end), the split count, then the two kernels.
  void run(const std::vector<int64_t>& request_first) {
    const int64_t group = args.q_heads / args.kv_heads, tile_tokens = std::max<int64_t>(1, kTileRows / group);
    int64_t widest = 0;
    for (int64_t b = 0; b < requests; ++b) {
      for (int64_t t = request_first[b]; t < request_first[b + 1]; t += tile_tokens) {
        const int64_t end = std::min(request_first[b + 1], t + tile_tokens);
        tiles.insert(tiles.end(), {t, end});
        int64_t lo = key_lo[t], hi = key_hi[t];
        for (int64_t u = t; u < end; ++u) lo = std::min(lo, key_lo[u]), hi = std::max(hi, key_hi[u]);
        widest = std::max(widest, hi - lo);
      }
    }
    args.num_tiles = int64_t(tiles.size()) / 2;
    if (tokens == 0) return;
    args.query_req = query_req.data();
    args.key_lo = key_lo.data();
    args.key_hi = key_hi.data();
    args.tiles = tiles.data();
    args.splits = args.num_tiles * args.kv_heads >= kEnoughTasks
                      ? 1
                      : std::max<int64_t>(1, (widest + kSplitKeys - 1) / kSplitKeys);
    args.split_keys = std::max<int64_t>(1, (widest + args.splits - 1) / args.splits);  // the splits cover it all
    std::vector<float> partial(tokens * args.q_heads * args.splits * (args.head_dim_v + 2));
    args.partial = partial.data();
    const AttentionArgs& a = args;
    const int64_t elem = a.dtype == DType::f32 ? 4 : 2;
    const int64_t task_bytes = a.split_keys * (a.head_dim + a.head_dim_v) * elem;
    parallel_rows(args.num_tiles * a.kv_heads * a.splits, task_bytes,
                  [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(attention_partial, a, begin, end); });
    parallel_rows(tokens * a.q_heads, (a.head_dim_v + 2) * a.splits * 4,
                  [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(attention_merge, a, begin, end); });
  }
};

}  // namespace

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& seq_lens, double sm_scale, const std::optional<Tensor>& sinks,
                      int64_t sliding_window, Tensor out) {
  PagedCall call(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, out);
  STD_TORCH_CHECK(call.requests == call.tokens, "block_table must have a row per query token (", call.tokens, "), got ",
                  call.requests);
  std::vector<int64_t> first(call.requests + 1);
  for (int64_t b = 0; b < call.requests; ++b) {
    call.set_range(b, b, call.seq_lens[b], sliding_window);
    first[b + 1] = b + 1;
  }
  call.run(first);
}

void extend_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& cu_seqlens_q, const Tensor& seq_lens, double sm_scale, bool causal,
                      const std::optional<Tensor>& sinks, int64_t sliding_window, Tensor out) {
  PagedCall call(q, k_cache, v_cache, block_table, seq_lens, sm_scale, sinks, out);
  const int32_t* cu = checked_vector<int32_t>(cu_seqlens_q, call.requests + 1, ScalarType::Int, "cu_seqlens_q");
  STD_TORCH_CHECK(cu[0] == 0 && cu[call.requests] == call.tokens, "cu_seqlens_q must run from 0 to the ", call.tokens,
                  " query tokens, got ", cu[0], " .. ", cu[call.requests]);
  std::vector<int64_t> first(call.requests + 1);
  for (int64_t b = 0; b < call.requests; ++b) {
    const int64_t q_len = int64_t(cu[b + 1]) - cu[b], len = call.seq_lens[b];
    STD_TORCH_CHECK(0 <= q_len && q_len <= len, "request ", b, " has ", q_len, " query tokens (cu_seqlens_q) but ", len,
                    " keys (seq_lens): the new tokens must be part of seq_lens");
    first[b + 1] = cu[b + 1];
    for (int64_t i = 0; i < q_len; ++i)
      call.set_range(cu[b] + i, b, causal ? len - q_len + i + 1 : len, sliding_window);
  }
  call.run(first);
}

}  // namespace sgl_npu_attention
