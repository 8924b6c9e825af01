// What the paged ops share: checks of the caches, the block table and the lengths (all before any cache memory is
// read), and the split-KV driver that runs a partial kernel and merges its splits by log-sum-exp.
#pragma once
#include <algorithm>
#include <vector>

#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace sgl_npu_attention {

using namespace sgl_npu_core;

// A paged cache [num_blocks, page_size, kv_heads, dim] on the CPU, last dim contiguous.
void check_cache(const Tensor& t, const char* name);

// A finite softmax scale (NaN or inf would zero or NaN every output, silently).
void check_sm_scale(double sm_scale);

// block_table [requests, max_pages] int32 and seq_lens [requests] int32: every length within the table's
// capacity, every page a request uses a block of the cache. Returns seq_lens' data.
const int32_t* check_pages(const Tensor& block_table, const Tensor& seq_lens, int64_t blocks, int64_t page_size);

// cu_seqlens_q [requests + 1] int32 from 0 to `tokens`, each request's query tokens part of its seq_lens.
const int32_t* check_cu_seqlens(const Tensor& cu_seqlens_q, int64_t requests, int64_t tokens, const int32_t* seq_lens);

// Splits of the key axis: long ranges are cut so that a batch of one still spreads over the cores (the merge
// costs one extra pass over [Hq, Dv] per split). No splitting once there are enough tasks without it.
int64_t key_splits(int64_t tasks, int64_t widest_range);

// Query rows of a tile up to which one task attends every KV head (see run).
constexpr int64_t kAllHeadsRows = 16;

// Query tokens of paged attention, each with a key range of its request, run as (tile, KV heads, split) tasks.
struct PagedCall {
  AttentionArgs args{};
  int64_t tokens, requests;
  const int32_t* seq_lens;
  std::vector<int64_t> query_req, key_lo, key_hi, tiles;

  // Checks the block table and seq_lens against a cache of `blocks` blocks of `page_size` tokens; `out` is
  // [tokens, q_heads, head_dim_v] of the kernels' dtype (checked by the op).
  PagedCall(const Tensor& block_table, const Tensor& seq_lens, int64_t tokens, int64_t blocks, int64_t page_size,
            const Tensor& out);

  // Query token t of `request` sees keys [lo, hi): set it (hi within the request's keys).
  void set_range(int64_t t, int64_t request, int64_t hi, int64_t window) {
    query_req[t] = request;
    key_hi[t] = hi;
    key_lo[t] = window > 0 ? std::max<int64_t>(0, hi - window) : 0;
  }

  // Tiles of each request's consecutive tokens [first, end) (`tile_tokens` at most), the split count, then the
  // partial kernel over the tasks (reading about `key_bytes` per key) and the merge.
  template <class Partial>
  void run(const std::vector<int64_t>& request_first, int64_t tile_tokens, int64_t key_bytes, const Partial& partial) {
    int64_t widest = 0, max_tile_tokens = 0;
    for (int64_t b = 0; b < requests; ++b) {
      for (int64_t t = request_first[b]; t < request_first[b + 1]; t += tile_tokens) {
        const int64_t end = std::min(request_first[b + 1], t + tile_tokens);
        max_tile_tokens = std::max(max_tile_tokens, end - t);
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
    // Tiles of few query rows (decode, short verify) attend all KV heads in one task: the heads share each key's
    // row of the page, so a task then streams whole rows; bigger tiles are compute-bound and keep a head each.
    args.kv_heads_per_task = max_tile_tokens * (args.q_heads / args.kv_heads) <= kAllHeadsRows ? args.kv_heads : 1;
    args.splits = key_splits(args.num_tiles * args.kv_heads / args.kv_heads_per_task, widest);
    args.split_keys = std::max<int64_t>(1, (widest + args.splits - 1) / args.splits);  // the splits cover it all
    std::vector<float> partial_rows(tokens * args.q_heads * args.splits * (args.head_dim_v + 2));
    args.partial = partial_rows.data();
    const AttentionArgs& a = args;
    parallel_rows(a.num_tiles * (a.kv_heads / a.kv_heads_per_task) * a.splits,
                  a.split_keys * key_bytes * a.kv_heads_per_task,
                  [&a, &partial](int64_t begin, int64_t end) { partial(a, begin, end); });
    parallel_rows(tokens * a.q_heads, (a.head_dim_v + 2) * a.splits * 4,
                  [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(attention_merge, a, begin, end); });
  }
};

}  // namespace sgl_npu_attention
