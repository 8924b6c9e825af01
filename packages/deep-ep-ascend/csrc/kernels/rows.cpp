#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace deep_ep::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// One row of `bytes` bytes; streaming stores when asked (and aligned), so a destination far larger than the
// caches is written without first being read.
inline void copy_row(char* dst, const char* src, int64_t bytes, bool stream) {
#if defined(__SSE2__)
  if (stream) {
    int64_t i = 0;
    for (; i + 64 <= bytes; i += 64)
      for (int k = 0; k < 64; k += 16)
        _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i + k),
                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i + k)));
    std::memcpy(dst + i, src + i, bytes - i);
    return;
  }
#endif
  std::memcpy(dst, src, bytes);
}

// out[t][c0, c0 + kWidth) accumulated in registers over every slot, then stored once.
template <int kWidth, class T, class O>
inline void reduce_columns(const ReduceRowsArgs& a, int64_t t, int64_t c0, bool stream) {
  constexpr int kVecs = kWidth / kVec;
  f32x8 acc[kVecs];
  for (int v = 0; v < kVecs; ++v)
    acc[v] = a.bias != nullptr ? load8(a.bias + t * a.bias_stride + c0 + v * kVec) : splat(0.0f);
  for (int64_t s = 0; s < a.slots; ++s) {
    const int64_t r = a.rows[t * a.slots + s];
    if (r < 0) continue;
    const T* src = (r < a.a_rows ? static_cast<const T*>(a.a) + r * a.a_stride
                                 : static_cast<const T*>(a.b) + (r - a.a_rows) * a.b_stride) +
                   c0;
    const float w = a.weights != nullptr ? a.weights[t * a.slots + s] : 1.0f;
    for (int v = 0; v < kVecs; ++v) acc[v] += load8(src + v * kVec) * w;
  }
  O* out = static_cast<O*>(a.out) + t * a.out_stride + c0;
  for (int v = 0; v < kVecs; ++v) stream ? store8_stream(out + v * kVec, acc[v]) : store8(out + v * kVec, acc[v]);
}

template <class T, class O>
void reduce(const ReduceRowsArgs& a, int64_t begin, int64_t end) {
  const int64_t h = a.hidden;
  const bool stream = should_stream(a.out, a.tokens, h * int64_t(sizeof(O)), a.out_stride * int64_t(sizeof(O)));
  for (int64_t t = begin; t < end; ++t) {
    int64_t c = 0;
    for (; c + 4 * kVec <= h; c += 4 * kVec) reduce_columns<4 * kVec, T, O>(a, t, c, stream);
    for (; c + kVec <= h; c += kVec) reduce_columns<kVec, T, O>(a, t, c, stream);
    for (; c < h; ++c) {  // the last h % 8 columns
      float acc = a.bias != nullptr ? a.bias[t * a.bias_stride + c] : 0.0f;
      for (int64_t s = 0; s < a.slots; ++s) {
        const int64_t r = a.rows[t * a.slots + s];
        if (r < 0) continue;
        const T* src = r < a.a_rows ? static_cast<const T*>(a.a) + r * a.a_stride
                                    : static_cast<const T*>(a.b) + (r - a.a_rows) * a.b_stride;
        acc += to_float(src[c]) * (a.weights != nullptr ? a.weights[t * a.slots + s] : 1.0f);
      }
      static_cast<O*>(a.out)[t * a.out_stride + c] = from_float<O>(acc);
    }
  }
  if (stream) stream_fence();
}

}  // namespace

void copy_rows(const CopyRowsArgs& a, int64_t begin, int64_t end) {
  // Rows copied into another rank's area are read there, not here: streaming already pays from 1 MiB on.
  const bool stream = a.rows * a.row_bytes >= (int64_t(1) << 20) && reinterpret_cast<uintptr_t>(a.dst) % 16 == 0 &&
                      a.dst_stride % 16 == 0;
  {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t s = a.src_rows != nullptr ? a.src_rows[i] : i;
      const int64_t d = a.dst_rows != nullptr ? a.dst_rows[i] : i;
      copy_row(static_cast<char*>(a.dst) + d * a.dst_stride, static_cast<const char*>(a.src) + s * a.src_stride,
               a.row_bytes, stream);
    }
    if (stream) stream_fence();  // the rows are visible before the caller signals the peers
  }
}

void reduce_rows(const ReduceRowsArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    if (a.out_fp32)
      reduce<scalar_t, float>(a, begin, end);
    else
      reduce<scalar_t, scalar_t>(a, begin, end);
  });
}

void quantize_int8(const QuantizeInt8Args& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    using T = scalar_t;
    const int64_t h = a.hidden;
    for (int64_t t = begin; t < end; ++t) {
      const T* x = static_cast<const T*>(a.x) + t * a.x_stride;
      int8_t* q = a.q + t * a.q_stride;
      f32x8 m0 = splat(0.0f), m1 = splat(0.0f);  // two chains, so the max latency is hidden
      int64_t c = 0;
      for (; c + 2 * kVec <= h; c += 2 * kVec) {  // load16's order: any order does for a maximum
        const f32x8x2 v = load16(x + c);
        m0 = vmax(m0, vabs(v.lo));
        m1 = vmax(m1, vabs(v.hi));
      }
      for (; c + kVec <= h; c += kVec) m0 = vmax(m0, vabs(load8(x + c)));
      float amax = reduce_max(vmax(m0, m1));
      for (; c < h; ++c) amax = std::max(amax, std::fabs(to_float(x[c])));
      // The reference's fp32 steps exactly: s = (1 / (amax + 1e-12)) * 127, q = rint(x * s), scale = 1 / s.
      const float scale = (1.0f / (amax + 1e-12f)) * 127.0f;
      // The next token's row is fetched while this one is written: its maximum is the next thing to wait on.
      const char* next = reinterpret_cast<const char*>(x + a.x_stride);
      const bool prefetch = t + 1 < end;
      for (c = 0; c + 2 * kVec <= h; c += 2 * kVec) {
        if (prefetch && c % (64 / sizeof(T)) == 0) __builtin_prefetch(next + c * sizeof(T));
        const f32x8x2 v = load16(x + c);
        store16_int8_rint<T>(q + c, {v.lo * scale, v.hi * scale});
      }
      for (; c + kVec <= h; c += kVec) store8_int8(q + c, vrint(load8(x + c) * scale));
      for (; c < h; ++c) q[c] = static_cast<int8_t>(std::nearbyint(to_float(x[c]) * scale));
      a.scales[t] = 1.0f / scale;
    }
  });
}

}  // namespace deep_ep::SGL_NPU_ISA
