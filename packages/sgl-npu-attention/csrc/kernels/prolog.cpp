#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/tile.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

namespace {

// fp32 RMSNorm of one row into y, rounded through the storage type T (as the reference rounds each stage).
template <class T>
void rms_norm_row(const T* x, const T* gamma, const T* beta, float eps, int64_t n, float* y) {
  to_fp32(x, y, n);
  float ss = 0.f;
  for (int64_t i = 0; i < n; ++i) ss += y[i] * y[i];
  const float inv = 1.0f / std::sqrt(ss / float(n) + eps);
  for (int64_t i = 0; i < n; ++i) {
    float v = y[i] * inv * to_float(gamma[i]);
    if (beta) v += to_float(beta[i]);
    y[i] = to_float(from_float<T>(v));
  }
}

inline int8_t to_code(float v) { return int8_t(clampf(std::nearbyint(v), -128.f, 127.f)); }

template <class T>
void quant_rows_t(const QuantRowsArgs& a, int64_t begin, int64_t end) {
  std::vector<float> y(a.cols);
  const T* gamma = static_cast<const T*>(a.gamma);
  const T* beta = static_cast<const T*>(a.beta);
  for (int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_stride;
    if (gamma)
      rms_norm_row(x, gamma, beta, a.eps, a.cols, y.data());
    else
      to_fp32(x, y.data(), a.cols);
    int8_t* codes = a.codes + r * a.codes_stride;
    if (a.per_tensor) {
      for (int64_t i = 0; i < a.cols; ++i) codes[i] = to_code(y[i] / a.scale + a.offset);
      a.row_scale[r] = 1.f;
      continue;
    }
    float amax = 0.f;
    for (int64_t i = 0; i < a.cols; ++i) amax = std::max(amax, std::fabs(y[i]));
    const float scale = amax / 127.0f;
    for (int64_t i = 0; i < a.cols; ++i) codes[i] = scale > 0.f ? to_code(y[i] / scale) : int8_t(0);
    a.row_scale[r] = scale;
  }
}

// Rotate-half RoPE: out[i] = x[i] cos[i] - x[i + h] sin[i], out[i + h] = x[i + h] cos[i + h] + x[i] sin[i + h].
template <class T>
void rope_half_row(const T* x, const T* cos, const T* sin, int64_t d, T* out) {
  const int64_t h = d / 2;
  for (int64_t i = 0; i < h; ++i) {
    const float x1 = to_float(x[i]), x2 = to_float(x[i + h]);
    const float lo = x1 * to_float(cos[i]) + -x2 * to_float(sin[i]);
    const float hi = x2 * to_float(cos[i + h]) + x1 * to_float(sin[i + h]);
    out[i] = from_float<T>(lo);
    out[i + h] = from_float<T>(hi);
  }
}

template <class T>
void cache_write_t(const CacheWriteArgs& a, int64_t begin, int64_t end) {
  std::vector<float> y(a.latent_dim);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t slot = a.slots[r], block = slot / a.page_size, row = slot % a.page_size;
    const T* latent = static_cast<const T*>(a.latent) + r * a.latent_stride;
    rms_norm_row(latent, static_cast<const T*>(a.gamma), static_cast<const T*>(nullptr), a.eps, a.latent_dim, y.data());
    T* dst = static_cast<T*>(a.kv_cache) + block * a.kv_block_stride + row * a.kv_token_stride;
    for (int64_t i = 0; i < a.latent_dim; ++i) dst[i] = from_float<T>(y[i]);
    rope_half_row(static_cast<const T*>(a.k_pe) + r * a.k_pe_stride, static_cast<const T*>(a.cos) + r * a.cos_stride,
                  static_cast<const T*>(a.sin) + r * a.sin_stride, a.rope_dim,
                  static_cast<T*>(a.kv_cache_rope) + block * a.rope_block_stride + row * a.rope_token_stride);
  }
}

}  // namespace

void quant_rows(const QuantRowsArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { quant_rows_t<scalar_t>(a, begin, end); });
}

void cache_write(const CacheWriteArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { cache_write_t<scalar_t>(a, begin, end); });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
