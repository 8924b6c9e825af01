#include <utility>
#include <vector>

#include "ops/paged.h"

namespace sgl_npu_attention {

namespace {

// (token, head) columns scored together by one task: 4 tokens of DeepSeek's 64 indexer heads.
constexpr int64_t kTileColumns = 256;
// Scores buffered at a time (floats): tiles are scored and selected in waves of about this many.
constexpr int64_t kWaveScores = 8 << 20;

}  // namespace

void lightning_indexer(const Tensor& q, const Tensor& k_cache, const Tensor& weights, const Tensor& block_table,
                       const Tensor& cu_seqlens_q, const Tensor& seq_lens_t, int64_t sparse_count, Tensor out) {
  check_cpu(q, "q");
  STD_TORCH_CHECK(q.dim() == 3, "q must be [tokens, heads, head_dim], got ", q.dim(), " dims");
  check_last_dim_contiguous(q, "q");
  check_cache(k_cache, "k_cache");
  const int64_t tokens = q.size(0), heads = q.size(1), d = q.size(2);
  STD_TORCH_CHECK(k_cache.size(2) == 1, "k_cache must have one kv head, got ", k_cache.size(2));
  STD_TORCH_CHECK(k_cache.size(3) == d, "k_cache must have q's head_dim ", d, ", got ", k_cache.size(3));
  STD_TORCH_CHECK(heads > 0, "q must have at least one head");
  IndexerArgs a{};
  a.dtype = float_dtype(q, "q");
  check_same_dtype(k_cache, q, "k_cache", "q");
  check_cpu(weights, "weights");
  STD_TORCH_CHECK(weights.dim() == 2 && weights.size(0) == tokens && weights.size(1) == heads,
                  "weights must have shape [", tokens, ", ", heads, "]");
  check_last_dim_contiguous(weights, "weights");
  a.weights_dtype = float_dtype(weights, "weights");
  STD_TORCH_CHECK(a.weights_dtype == DType::f32 || a.weights_dtype == a.dtype, "weights must be float32 or q's dtype (",
                  dtype_name(q.scalar_type()), "), got ", dtype_name(weights.scalar_type()));
  STD_TORCH_CHECK(sparse_count > 0, "sparse_count must be positive, got ", sparse_count);
  check_cpu(out, "out");
  check_dtype(out, ScalarType::Int, "out");
  STD_TORCH_CHECK(out.dim() == 2 && out.size(0) == tokens && out.size(1) == sparse_count, "out must have shape [",
                  tokens, ", ", sparse_count, "]");
  check_last_dim_contiguous(out, "out");
  check_disjoint(out, "out");
  // Each wave of tiles writes out before the next reads its inputs (block_table among them) again.
  for (auto [t, name] : {std::pair{&q, "q"},
                         {&k_cache, "k_cache"},
                         {&weights, "weights"},
                         {&block_table, "block_table"},
                         {&cu_seqlens_q, "cu_seqlens_q"},
                         {&seq_lens_t, "seq_lens"}})
    check_apart(out, *t, "out", name);
  const int32_t* seq_lens = check_pages(block_table, seq_lens_t, k_cache.size(0), k_cache.size(1));
  const int64_t requests = block_table.size(0);
  const int32_t* cu = check_cu_seqlens(cu_seqlens_q, requests, tokens, seq_lens);

  // Each token's request and causal key count; tiles of a request's consecutive tokens.
  std::vector<int64_t> query_req(tokens), key_hi(tokens), tiles, score_offset(tokens);
  const int64_t tile_tokens = std::max<int64_t>(1, kTileColumns / heads);
  int64_t widest = 0;
  for (int64_t b = 0; b < requests; ++b) {
    const int64_t q_len = int64_t(cu[b + 1]) - cu[b];
    for (int64_t i = 0; i < q_len; ++i) {
      query_req[cu[b] + i] = b;
      key_hi[cu[b] + i] = seq_lens[b] - q_len + i + 1;
    }
    for (int64_t t = cu[b]; t < cu[b + 1]; t += tile_tokens) {
      tiles.insert(tiles.end(), {t, std::min<int64_t>(cu[b + 1], t + tile_tokens)});
      widest = std::max(widest, key_hi[tiles.back() - 1]);  // the tile's last token sees the most keys
    }
  }
  const int64_t num_tiles = int64_t(tiles.size()) / 2;
  a.heads = heads;
  a.head_dim = d;
  a.page_size = k_cache.size(1);
  a.sparse_count = sparse_count;
  a.q = q.const_data_ptr();
  a.q_token_stride = q.stride(0);
  a.q_head_stride = q.stride(1);
  a.k_cache = k_cache.const_data_ptr();
  a.k_block_stride = k_cache.stride(0);
  a.k_token_stride = k_cache.stride(1);
  a.weights = weights.const_data_ptr();
  a.weights_stride = weights.stride(0);
  a.block_table = static_cast<const int32_t*>(block_table.const_data_ptr());
  a.block_table_stride = block_table.stride(0);
  a.query_req = query_req.data();
  a.key_hi = key_hi.data();
  a.splits = key_splits(num_tiles, widest);
  a.split_keys = std::max<int64_t>(1, (widest + a.splits - 1) / a.splits);
  a.score_offset = score_offset.data();
  a.out = static_cast<int32_t*>(out.mutable_data_ptr());
  a.out_stride = out.stride(0);
  const int64_t elem = a.dtype == DType::f32 ? 4 : 2;
  std::vector<float> scores;
  for (int64_t first_tile = 0; first_tile < num_tiles;) {
    // A wave: consecutive tiles (so consecutive tokens) whose scores fit the buffer, at least one tile.
    const int64_t t_begin = tiles[2 * first_tile];
    int64_t end_tile = first_tile, total = 0;
    while (end_tile < num_tiles) {
      int64_t need = 0;
      for (int64_t t = tiles[2 * end_tile]; t < tiles[2 * end_tile + 1]; ++t) need += key_hi[t];
      if (end_tile > first_tile && total + need > kWaveScores) break;
      for (int64_t t = tiles[2 * end_tile]; t < tiles[2 * end_tile + 1]; ++t) {
        score_offset[t] = total;
        total += key_hi[t];
      }
      ++end_tile;
    }
    const int64_t t_end = tiles[2 * end_tile - 1];
    scores.resize(total);
    a.scores = scores.data();
    a.tiles = tiles.data() + 2 * first_tile;
    const IndexerArgs& args = a;
    parallel_rows((end_tile - first_tile) * a.splits, a.split_keys * d * elem,
                  [&args](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(indexer_scores, args, begin, end); });
    parallel_rows(t_end - t_begin, (total / (t_end - t_begin)) * 8, [&args, t_begin](int64_t begin, int64_t end) {
      SGL_NPU_ISA_CALL(indexer_topk, args, t_begin + begin, t_begin + end);
    });
    first_tile = end_tile;
  }
}

}  // namespace sgl_npu_attention
