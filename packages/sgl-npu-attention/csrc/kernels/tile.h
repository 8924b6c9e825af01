// Register-tiled fp32 building blocks shared by the kernels: row conversion to fp32, softmax weights and a rank-k
// update of a tile of up to 6 x 16 outputs (12 accumulators). Inside the ISA namespace: each ISA build has its own
// copy.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sgl_npu_core/vec.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

using namespace sgl_npu_core;

constexpr int64_t kTileRows = 6, kTileCols = 16;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <class T>
inline void to_fp32(const T* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) store8(dst + i, load8(src + i));
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

// The softmax weights of a block: each of the n vectors v_j at base + j * stride (floats) becomes exp(v_j - m), four
// at a time through vexp_n (independent chains side by side); returns their sum, added in j order.
inline f32x8 exp_shifted_sum(float* base, int64_t stride, int64_t n, f32x8 m) {
  f32x8 sum = splat(0.f);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    f32x8 p[4];
    for (int k = 0; k < 4; ++k) p[k] = load8(base + (j + k) * stride) - m;
    vexp_n<4>(p);
    for (int k = 0; k < 4; ++k) {
      store8(base + (j + k) * stride, p[k]);
      sum += p[k];
    }
  }
  for (; j < n; ++j) {
    const f32x8 p = vexp(load8(base + j * stride) - m);
    store8(base + j * stride, p);
    sum += p;
  }
  return sum;
}

// r[0..8) transposed in place: afterwards r[i][j] is what r[j][i] was.
inline void transpose8x8(f32x8* r) {
#if defined(__AVX__)
  auto m = [](f32x8 x) { return bitcast<__m256>(x); };
  const __m256 t0 = _mm256_unpacklo_ps(m(r[0]), m(r[1])), t1 = _mm256_unpackhi_ps(m(r[0]), m(r[1]));
  const __m256 t2 = _mm256_unpacklo_ps(m(r[2]), m(r[3])), t3 = _mm256_unpackhi_ps(m(r[2]), m(r[3]));
  const __m256 t4 = _mm256_unpacklo_ps(m(r[4]), m(r[5])), t5 = _mm256_unpackhi_ps(m(r[4]), m(r[5]));
  const __m256 t6 = _mm256_unpacklo_ps(m(r[6]), m(r[7])), t7 = _mm256_unpackhi_ps(m(r[6]), m(r[7]));
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = bitcast<f32x8>(_mm256_permute2f128_ps(u0, u4, 0x20));
  r[1] = bitcast<f32x8>(_mm256_permute2f128_ps(u1, u5, 0x20));
  r[2] = bitcast<f32x8>(_mm256_permute2f128_ps(u2, u6, 0x20));
  r[3] = bitcast<f32x8>(_mm256_permute2f128_ps(u3, u7, 0x20));
  r[4] = bitcast<f32x8>(_mm256_permute2f128_ps(u0, u4, 0x31));
  r[5] = bitcast<f32x8>(_mm256_permute2f128_ps(u1, u5, 0x31));
  r[6] = bitcast<f32x8>(_mm256_permute2f128_ps(u2, u6, 0x31));
  r[7] = bitcast<f32x8>(_mm256_permute2f128_ps(u3, u7, 0x31));
#else
  for (int i = 0; i < kVec; ++i)
    for (int j = i + 1; j < kVec; ++j) {
      const float t = r[i][j];
      r[i][j] = r[j][i];
      r[j][i] = t;
    }
#endif
}

// For rows i < MR: c[i][0, nc) = (c_scale ? c[i] * c_scale[i] : 0) + sum_k a[i * a_row + k * a_step] * b[k][0, 16),
// k < kn, b rows ldb apart (fp32, or bf16 / fp16 widened as they are loaded). The a strides let one kernel read A
// row-major (a_step = 1) or transposed (a_row = 1). Every b row must be readable for 16 values (callers pad);
// lanes past nc are computed but never stored.
template <int MR, class B = float>
inline void tile16(const float* a, int64_t a_row, int64_t a_step, int64_t kn, const B* b, int64_t ldb, float* c,
                   int64_t ldc, int64_t nc, const float* c_scale) {
  f32x8 lo[MR], hi[MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    lo[i] = hi[i] = splat(0.f);
    if (c_scale == nullptr) continue;
    float row[kTileCols] = {};
    const float* src = c + i * ldc;
    if (nc < kTileCols) {
      std::copy(src, src + nc, row);
      src = row;
    }
    lo[i] = load8(src) * c_scale[i];
    hi[i] = load8(src + kVec) * c_scale[i];
  }
  for (int64_t k = 0; k < kn; ++k) {
    const f32x8 b0 = load8(b + k * ldb), b1 = load8(b + k * ldb + kVec);
    const float* ak = a + k * a_step;
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const f32x8 x = splat(ak[i * a_row]);
      lo[i] += x * b0;
      hi[i] += x * b1;
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    float* dst = c + i * ldc;
    if (nc == kTileCols) {
      store8(dst, lo[i]);
      store8(dst + kVec, hi[i]);
    } else {
      float row[kTileCols];
      store8(row, lo[i]);
      store8(row + kVec, hi[i]);
      std::copy(row, row + nc, dst);
    }
  }
}

// fn(std::integral_constant<int, MR>{}) for a run-time row count mr in 1..6 (6 above): the register tiles' rows
// are template constants.
template <class F>
inline void with_tile_rows(int64_t mr, F&& fn) {
  switch (mr) {
    case 1:
      return fn(std::integral_constant<int, 1>{});
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 3:
      return fn(std::integral_constant<int, 3>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    case 5:
      return fn(std::integral_constant<int, 5>{});
    default:
      return fn(std::integral_constant<int, 6>{});
  }
}

// tile16 for a run-time row count 1..6.
template <class B = float>
inline void tile16_rows(int64_t mr, const float* a, int64_t a_row, int64_t a_step, int64_t kn, const B* b, int64_t ldb,
                        float* c, int64_t ldc, int64_t nc, const float* c_scale) {
  with_tile_rows(mr,
                 [&](auto rows) { tile16<decltype(rows)::value>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale); });
}

#if defined(SGL_NPU_BF16_DOT)
// For rows i < MR and NC panels of 16 columns: c[i][0, 16 NC) = (c_scale ? c[i] * c_scale[i] : 0) +
// sum_k a[i][k] b_k[0, 16 NC) over k < kn, A and B in bf16: A's rows lda values apart (lda even), B's rows ldb apart.
// Two rows of B are interleaved (one unpack per 8 columns) and weighed by a pair of A's values (one 32-bit broadcast)
// in one vdpbf16ps: half the instructions of widening every B value for one FMA per k. The unpacks leave columns
// 0-3 | 8-11 in one accumulator and 4-7 | 12-15 in the other, which the 128-bit lane swaps on load and store undo.
// For an odd kn, a[i][kn] is read and meets a zero row (it must be finite). between() runs before each pair of k.
template <int MR, int NC, class Between>
inline void tile16_pairs(const bf16_t* a, int64_t lda, int64_t kn, const bf16_t* b, int64_t ldb, float* c, int64_t ldc,
                         const float* c_scale, Between&& between) {
  __m256 lo[NC][MR], hi[NC][MR];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int p = 0; p < NC; ++p) {
      lo[p][i] = hi[p][i] = _mm256_setzero_ps();
      if (c_scale == nullptr) continue;
      const float* ci = c + i * ldc + p * kTileCols;
      const __m256 x = _mm256_loadu_ps(ci), y = _mm256_loadu_ps(ci + kVec), scale = _mm256_set1_ps(c_scale[i]);
      lo[p][i] = _mm256_mul_ps(_mm256_permute2f128_ps(x, y, 0x20), scale);
      hi[p][i] = _mm256_mul_ps(_mm256_permute2f128_ps(x, y, 0x31), scale);
    }
  for (int64_t k = 0; k < kn; k += 2) {
    between();
    __m256bh even[NC], odd[NC];
#pragma GCC unroll 2
    for (int p = 0; p < NC; ++p) {
      const bf16_t* bk = b + k * ldb + p * kTileCols;
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk));
      const __m256i x1 =
          k + 1 < kn ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bk + ldb)) : _mm256_setzero_si256();
      even[p] = bitcast<__m256bh>(_mm256_unpacklo_epi16(x0, x1));
      odd[p] = bitcast<__m256bh>(_mm256_unpackhi_epi16(x0, x1));
    }
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, a + i * lda + k, sizeof pair);
      const __m256bh w = bitcast<__m256bh>(_mm256_set1_epi32(pair));
#pragma GCC unroll 2
      for (int p = 0; p < NC; ++p) {
        lo[p][i] = _mm256_dpbf16_ps(lo[p][i], w, even[p]);
        hi[p][i] = _mm256_dpbf16_ps(hi[p][i], w, odd[p]);
      }
    }
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int p = 0; p < NC; ++p) {
      float* ci = c + i * ldc + p * kTileCols;
      _mm256_storeu_ps(ci, _mm256_permute2f128_ps(lo[p][i], hi[p][i], 0x20));
      _mm256_storeu_ps(ci + kVec, _mm256_permute2f128_ps(lo[p][i], hi[p][i], 0x31));
    }
}

// tile16_pairs for a run-time row count 1..6 over `cols` columns (a multiple of 16): up to four rows two panels at a
// time, so that 16 accumulators (independent chains) cover vdpbf16ps's latency; one panel at a time above. The call
// for columns [col, col + width) runs make_between(col, width)() before each pair of k.
template <class MakeBetween>
inline void tile16_pairs_rows(int64_t mr, const bf16_t* a, int64_t lda, int64_t kn, const bf16_t* b, int64_t ldb,
                              float* c, int64_t ldc, int64_t cols, const float* c_scale, MakeBetween&& make_between) {
  int64_t col = 0;
  auto panels = [&](auto rows, auto panel_count) {
    constexpr int MR = decltype(rows)::value, NC = decltype(panel_count)::value;
    for (; col + NC * kTileCols <= cols; col += NC * kTileCols)
      tile16_pairs<MR, NC>(a, lda, kn, b + col, ldb, c + col, ldc, c_scale, make_between(col, NC * kTileCols));
  };
  with_tile_rows(mr, [&](auto rows) {
    if constexpr (decltype(rows)::value <= 4) panels(rows, std::integral_constant<int, 2>{});
    panels(rows, std::integral_constant<int, 1>{});
  });
}
#endif

}  // namespace sgl_npu_attention::SGL_NPU_ISA
