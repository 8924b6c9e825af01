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

template <class T>
void reduce(const ReduceRowsArgs& a, int64_t begin, int64_t end) {
  const int64_t h = a.hidden;
  {
    // fp32 row accumulator: rows up to a few thousand channels stay in L1 while the slots stream past.
    constexpr int64_t kChunk = 2048;
    alignas(32) float acc[kChunk];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t* rows = a.rows + t * a.slots;
      const float* w = a.weights != nullptr ? a.weights + t * a.slots : nullptr;
      T* out = static_cast<T*>(a.out) + t * a.out_stride;
      for (int64_t c0 = 0; c0 < h; c0 += kChunk) {
        const int64_t n = std::min(kChunk, h - c0);
        if (a.bias != nullptr)
          std::memcpy(acc, a.bias + t * a.bias_stride + c0, n * sizeof(float));
        else
          std::memset(acc, 0, n * sizeof(float));
        for (int64_t s = 0; s < a.slots; ++s) {
          const int64_t r = rows[s];
          if (r < 0) continue;
          const T* src = r < a.a_rows ? static_cast<const T*>(a.a) + r * a.a_stride
                                      : static_cast<const T*>(a.b) + (r - a.a_rows) * a.b_stride;
          src += c0;
          const float ws = w != nullptr ? w[s] : 1.0f;
          int64_t c = 0;
          for (; c + kVec <= n; c += kVec) store8(acc + c, load8(acc + c) + load8(src + c) * ws);
          for (; c < n; ++c) acc[c] += to_float(src[c]) * ws;
        }
        int64_t c = 0;
        for (; c + kVec <= n; c += kVec) store8(out + c0 + c, load8(acc + c));
        for (; c < n; ++c) out[c0 + c] = from_float<T>(acc[c]);
      }
    }
  }
}

}  // namespace

void copy_rows(const CopyRowsArgs& a, int64_t begin, int64_t end) {
  const bool stream = should_stream(a.dst, a.rows, a.row_bytes, a.dst_stride);
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
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { reduce<scalar_t>(a, begin, end); });
}

}  // namespace deep_ep::SGL_NPU_ISA
