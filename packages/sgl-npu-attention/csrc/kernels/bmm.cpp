#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/tile.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

namespace {

constexpr int64_t kPanelBytes = 128 << 10;    // fp32 B rows converted at a time: half of L2
constexpr int64_t kPairCols = 2 * kTileCols;  // B strips of tile16_pairs's two panels
constexpr int64_t kPairDepth = 256;           // k per pass: a strip of B (16 KB) stays in L1 for every row tile
constexpr int64_t kWideFrom = 24;             // from this many rows, tiles of 6 x 32 outputs (24 accumulators)

#if defined(SGL_NPU_BF16_DOT)
// acc[mn][n] = a[mn][k] b[k][n] for bf16 with k even and n a multiple of 16: A and B read as they are (no fp32
// copies), two k at a time by tile16_pairs, B in strips of kPairCols columns by kPairDepth rows. Tiles of 6 rows
// load and interleave each strip row once for 24 products, 4-row tiles for 16 (1.10x at 1024 rows); short tasks keep
// 4-row tiles, as 16 rows in 6 + 6 + 4 run slower than in 4 x 4.
void pairs_product(const bf16_t* a, int64_t lda, int64_t mn, const bf16_t* b, int64_t ldb, int64_t k, int64_t n,
                   float* acc) {
  const float ones[kTileRows] = {1.f, 1.f, 1.f, 1.f, 1.f, 1.f};
  auto none = [](int64_t, int64_t) { return [] {}; };
  for (int64_t k0 = 0; k0 < k; k0 += kPairDepth) {
    const int64_t kc = std::min(kPairDepth, k - k0);
    const float* scale = k0 == 0 ? nullptr : ones;  // later passes add to the first's sums
    for (int64_t n0 = 0; n0 < n; n0 += kPairCols) {
      const int64_t width = std::min(kPairCols, n - n0);
      const bf16_t* strip = b + k0 * ldb + n0;
      int64_t i = 0;
      if (width == kPairCols && mn >= kWideFrom)
        for (; i + kTileRows <= mn; i += kTileRows)
          tile16_pairs<kTileRows, 2>(a + i * lda + k0, lda, kc, strip, ldb, acc + i * n + n0, n, scale, [] {});
      for (; i < mn; i += 4)
        tile16_pairs_rows(std::min<int64_t>(4, mn - i), a + i * lda + k0, lda, kc, strip, ldb, acc + i * n + n0, n,
                          width, scale, none);
    }
  }
}
#endif

// Output rows [m0, m0 + mn) of head h from fp32 rows ld apart.
template <class T>
void store_rows(const BmmArgs& p, int64_t m0, int64_t mn, int64_t h, const float* acc, int64_t ld) {
  for (int64_t i = 0; i < mn; ++i) {
    T* out = static_cast<T*>(p.out) + (m0 + i) * p.out_stride0 + h * p.out_stride1;
    const float* t = acc + i * ld;
    int64_t j = 0;
    for (; j + kVec <= p.n; j += kVec) store8(out + j, load8(t + j));
    for (; j < p.n; ++j) out[j] = from_float<T>(t[j]);
  }
}

// One task: rows [m0, m1) of one head. They are converted to fp32 contiguous rows (also for fp32 input: rows of a are
// often a multiple of 4 KB apart and would evict each other), then the head's B is walked `depth` rows at a time:
// each row read once, in order (strided 16-column reads would defeat the prefetcher), into fp32 panels of 16 columns
// over which every 6-row group of the task passes, accumulating into an fp32 copy of its output rows.
template <class T>
void bmm_tasks(const BmmArgs& p, int64_t begin, int64_t end) {
  const int64_t blocks = (p.m + p.m_block - 1) / p.m_block, k = p.k, padded = round_up(p.n, kTileCols);
  const int64_t depth = std::clamp<int64_t>(kPanelBytes / (4 * padded), 1, std::max<int64_t>(k, 1));
  std::vector<float> panels(depth * padded, 0.f), rows(p.m_block * k), acc(p.m_block * padded);
  const std::vector<float> ones(kTileRows, 1.f);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t h = task / blocks, m0 = task % blocks * p.m_block, mn = std::min(p.m, m0 + p.m_block) - m0;
    const T* a = static_cast<const T*>(p.a) + m0 * p.a_stride0 + h * p.a_stride1;
    const T* b = static_cast<const T*>(p.b) + h * p.b_stride0;
#if defined(SGL_NPU_BF16_DOT)
    if constexpr (std::is_same_v<T, bf16_t>)
      if (k > 0 && k % 2 == 0 && p.n % kTileCols == 0) {
        pairs_product(a, p.a_stride0, mn, b, p.b_stride1, k, p.n, acc.data());
        store_rows<T>(p, m0, mn, h, acc.data(), padded);
        continue;
      }
#endif
    for (int64_t i = 0; i < mn; ++i) to_fp32(a + i * p.a_stride0, rows.data() + i * k, k);
    if (k == 0) std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t k0 = 0; k0 < k; k0 += depth) {
      const int64_t kc = std::min(depth, k - k0);
      for (int64_t kk = 0; kk < kc; ++kk) {  // panel-major [n / 16][kc][16]; the padding columns stay 0
        const T* row = b + (k0 + kk) * p.b_stride1;
        for (int64_t n0 = 0; n0 < p.n; n0 += kTileCols)
          to_fp32(row + n0, panels.data() + (n0 * kc) + kk * kTileCols, std::min(kTileCols, p.n - n0));
      }
      for (int64_t n0 = 0; n0 < p.n; n0 += kTileCols)
        for (int64_t i = 0; i < mn; i += kTileRows)
          tile16_rows(std::min(kTileRows, mn - i), rows.data() + i * k + k0, k, 1, kc, panels.data() + n0 * kc,
                      kTileCols, acc.data() + i * padded + n0, padded, kTileCols, k0 == 0 ? nullptr : ones.data());
    }
    store_rows<T>(p, m0, mn, h, acc.data(), padded);
  }
}

}  // namespace

void batch_matmul(const BmmArgs& p, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(p.dtype, [&] { bmm_tasks<scalar_t>(p, begin, end); });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
