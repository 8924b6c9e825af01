// Register-tiled fp32 building blocks shared by the kernels: row conversion to fp32 and a rank-k update of a
// tile of up to 6 x 16 outputs (12 accumulators). Inside the ISA namespace: each ISA build has its own copy.
#pragma once
#include <algorithm>
#include <cstdint>

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

// tile16 for a run-time row count 1..6.
template <class B = float>
inline void tile16_rows(int64_t mr, const float* a, int64_t a_row, int64_t a_step, int64_t kn, const B* b, int64_t ldb,
                        float* c, int64_t ldc, int64_t nc, const float* c_scale) {
  switch (mr) {
    case 1:
      return tile16<1>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale);
    case 2:
      return tile16<2>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale);
    case 3:
      return tile16<3>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale);
    case 4:
      return tile16<4>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale);
    case 5:
      return tile16<5>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale);
    default:
      return tile16<6>(a, a_row, a_step, kn, b, ldb, c, ldc, nc, c_scale);
  }
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
