#include <cmath>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

template <class T>
const T* row(const void* base, int64_t stride, int64_t r) {
  return static_cast<const T*>(base) + r * stride;
}
template <class T>
T* row(void* base, int64_t stride, int64_t r) {
  return static_cast<T*>(base) + r * stride;
}

// int8 = saturate(round_half_even(v * scale + offset)).
inline void store_int8(int8_t* q, f32x8 v, const float* scale, const float* offset) {
  v = v * load8(scale);
  if (offset) v = v + load8(offset);
  store8_int8(q, vround_even_small(vclamp(v, -128.f, 127.f)));
}

// Sum of squares of `src` (or of src = x + residual, rounded to T and stored at `sum`).
template <class T>
float sum_squares(const T* x, const T* res, T* sum, int64_t n) {
  // Four accumulators: one FMA chain would wait out its latency on every vector.
  f32x8 acc[4] = {splat(0.f), splat(0.f), splat(0.f), splat(0.f)};
  int64_t i = 0;
  for (; i + 4 * kVec <= n; i += 4 * kVec) {
    for (int k = 0; k < 4; ++k) {
      const int64_t j = i + k * kVec;
      f32x8 v = load8(x + j);
      if (res) {
        store8(sum + j, v + load8(res + j));
        v = load8(sum + j);  // re-read: the norm sees the sum rounded to T
      }
      acc[k] += v * v;
    }
  }
  for (; i + kVec <= n; i += kVec) {
    f32x8 v = load8(x + i);
    if (res) {
      store8(sum + i, v + load8(res + i));
      v = load8(sum + i);
    }
    acc[0] += v * v;
  }
  float ss = reduce_add((acc[0] + acc[1]) + (acc[2] + acc[3]));
  for (; i < n; ++i) {
    float v = to_float(x[i]);
    if (res) {
      sum[i] = from_float<T>(v + to_float(res[i]));
      v = to_float(sum[i]);
    }
    ss += v * v;
  }
  return ss;
}

template <class T, bool kQuant>
void norm_rows(const NormArgs& a, int64_t begin, int64_t end) {
  const int64_t n = a.hidden;
  const float* w = a.weight;
  const float* b = a.bias;
  for (int64_t r = begin; r < end; ++r) {
    const T* x = row<T>(a.x, a.x_stride, r);
    const T* res = a.residual ? row<T>(a.residual, a.residual_stride, r) : nullptr;
    T* sum = a.residual ? row<T>(a.sum, a.sum_stride, r) : nullptr;
    const float ss = sum_squares(x, res, sum, n);
    const float inv = 1.0f / std::sqrt(ss / float(n) + a.eps);
    const T* src = res ? sum : x;
    int64_t i = 0;
    if constexpr (kQuant) {
      int8_t* q = row<int8_t>(a.out, a.out_stride, r);
      for (; i + kVec <= n; i += kVec) {
        f32x8 v = load8(src + i) * inv * load8(w + i);
        if (b) v = v + load8(b + i);
        store_int8(q + i, v, a.quant_scale + i, a.quant_offset ? a.quant_offset + i : nullptr);
      }
      for (; i < n; ++i) {
        float v = to_float(src[i]) * inv * w[i] + (b ? b[i] : 0.f);
        v = v * a.quant_scale[i] + (a.quant_offset ? a.quant_offset[i] : 0.f);
        q[i] = int8_t(std::nearbyint(clampf(v, -128.f, 127.f)));
      }
    } else {
      T* out = row<T>(a.out, a.out_stride, r);
      for (; i + kVec <= n; i += kVec) {
        f32x8 v = load8(src + i) * inv * load8(w + i);
        if (b) v = v + load8(b + i);
        if (a.stream)
          store8_stream(out + i, v);
        else
          store8(out + i, v);
      }
      for (; i < n; ++i) out[i] = from_float<T>(to_float(src[i]) * inv * w[i] + (b ? b[i] : 0.f));
    }
  }
}

}  // namespace

void rmsnorm_rows(const NormArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    if (a.quant_scale)
      norm_rows<scalar_t, true>(a, begin, end);
    else
      norm_rows<scalar_t, false>(a, begin, end);
  });
  if (a.stream) stream_fence();
}

void to_float32(DType dtype, const void* src, float* dst, int64_t n, float add) {
  SGL_NPU_DISPATCH_FLOAT(dtype, [&] {
    const scalar_t* s = static_cast<const scalar_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = to_float(s[i]) + add;
  });
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
