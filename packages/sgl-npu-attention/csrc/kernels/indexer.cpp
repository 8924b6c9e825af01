#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/paged.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

namespace {

constexpr int64_t kKeys = 32;  // keys per block

template <class W>
void weights_fp32(const IndexerArgs& a, int64_t t, float* dst) {
  to_fp32(static_cast<const W*>(a.weights) + t * a.weights_stride, dst, a.heads);
}

// A task (tile, split) holds the tile's queries transposed, Q^T [d][(token, head)] (columns padded to 16), and per
// block of keys computes S^T [keys][(token, head)] = K Q^T with the register tile, then each token's weighted sum of
// its heads' relu'd scores, 8 heads per vector.
template <class T>
void score_tasks(const IndexerArgs& a, int64_t begin, int64_t end) {
  const int64_t heads = a.heads, d = a.head_dim, kd = round_up(d, kTileCols);
  std::vector<float> qt, w, keys(kKeys * kd, 0.f), st;
  const KeyPart part{a.k_cache, a.k_block_stride, a.k_token_stride, d};
  for (int64_t task = begin; task < end; ++task) {
    const int64_t split = task % a.splits, tile = task / a.splits;
    const int64_t t0 = a.tiles[2 * tile], t1 = a.tiles[2 * tile + 1], cols = round_up((t1 - t0) * heads, kTileCols);
    qt.assign(d * cols, 0.f);
    w.resize((t1 - t0) * heads);
    st.resize(kKeys * cols);
    int64_t hi = 0;
    for (int64_t t = t0; t < t1; ++t) {
      hi = std::max(hi, a.key_hi[t]);
      const T* q = static_cast<const T*>(a.q) + t * a.q_token_stride;
      const int64_t c0 = (t - t0) * heads;
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < d; ++i) qt[i * cols + c0 + h] = to_float(q[h * a.q_head_stride + i]);
      float* wt = w.data() + c0;
      if (a.weights_dtype == DType::f32)
        weights_fp32<float>(a, t, wt);
      else
        weights_fp32<T>(a, t, wt);
    }
    const int64_t first = split * a.split_keys, last = std::min(hi, first + a.split_keys);
    const int32_t* pages = a.block_table + a.query_req[t0] * a.block_table_stride;
    for (int64_t k0 = first; k0 < last; k0 += kKeys) {
      const int64_t n = std::min(kKeys, last - k0);
      load_keys<T>(pages, a.page_size, k0, n, &part, 1, keys.data(), kd);
      for (int64_t j = 0; j < n; j += kTileRows)
        for (int64_t c = 0; c < cols; c += kTileCols)
          tile16_rows(std::min(kTileRows, n - j), keys.data() + j * kd, kd, 1, d, qt.data() + c, cols,
                      st.data() + j * cols + c, cols, kTileCols, nullptr);
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t c0 = (t - t0) * heads, visible = std::min(n, a.key_hi[t] - k0);
        const float* wt = w.data() + c0;
        float* out = a.scores + a.score_offset[t] + k0;
        for (int64_t j = 0; j < visible; ++j) {
          const float* s = st.data() + j * cols + c0;
          f32x8 acc = splat(0.f);
          int64_t h = 0;
          for (; h + kVec <= heads; h += kVec) acc += load8(wt + h) * vmax(load8(s + h), splat(0.f));
          float score = reduce_add(acc);
          for (; h < heads; ++h) score += wt[h] * std::max(s[h], 0.f);
          // NaN ranks as +inf; + 0 turns -0 into +0 so that the two tie, as they compare equal
          out[j] = score != score ? std::numeric_limits<float>::infinity() : score + 0.f;
        }
      }
    }
  }
}

// Sort key of (score, index): ascending keys = descending scores, ties by ascending index. The score's bits are
// mapped to an unsigned order (negative floats reversed), then complemented.
inline uint64_t rank_key(float score, int64_t index) {
  uint32_t u;
  std::memcpy(&u, &score, 4);
  u ^= (u >> 31) ? 0xFFFFFFFFu : 0x80000000u;
  return (uint64_t(~u) << 32) | uint64_t(index);
}

void topk_rows(const IndexerArgs& a, int64_t begin, int64_t end) {
  std::vector<uint64_t> keys;
  for (int64_t t = begin; t < end; ++t) {
    const int64_t n = a.key_hi[t], k = std::min(n, a.sparse_count);
    const float* scores = a.scores + a.score_offset[t];
    keys.resize(n);
    for (int64_t s = 0; s < n; ++s) keys[s] = rank_key(scores[s], s);
    if (k < n) std::nth_element(keys.begin(), keys.begin() + k, keys.end());
    std::sort(keys.begin(), keys.begin() + k);
    int32_t* out = a.out + t * a.out_stride;
    for (int64_t i = 0; i < k; ++i) out[i] = int32_t(keys[i] & 0xFFFFFFFFu);
    std::fill(out + k, out + a.sparse_count, -1);
  }
}

}  // namespace

void indexer_scores(const IndexerArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { score_tasks<scalar_t>(a, begin, end); });
}

void indexer_topk(const IndexerArgs& a, int64_t begin, int64_t end) { topk_rows(a, begin, end); }

}  // namespace sgl_npu_attention::SGL_NPU_ISA
