#include <algorithm>
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

// Dot products of up to 4 int16 rows (a, k apart: codes widened once per task) with 2 int8 weight rows (w, ldw
// apart) over k: acc[i][j].
void dots_4x2(const int16_t* a, int64_t rows, const int8_t* w, int64_t ldw, int64_t k, int64_t acc[4][2]) {
  int64_t c_tail = 0;
  for (int64_t i = 0; i < 4; ++i) acc[i][0] = acc[i][1] = 0;
#if defined(__AVX2__)
  // madd sums pairs of products (|p| <= 2^14) into int32 lanes, flushed to int64 every kChunk columns, before they
  // could overflow. Rows past `rows` read the buffer's zero padding (the caller pads to 4 rows).
  constexpr int64_t kChunk = 1 << 14;
  const int64_t k16 = k - k % 16;
  for (int64_t c0 = 0; c0 < k16; c0 += kChunk) {
    const int64_t c1 = std::min(k16, c0 + kChunk);
    __m256i s[4][2];
    for (auto& r : s) r[0] = r[1] = _mm256_setzero_si256();
    for (int64_t c = c0; c < c1; c += 16) {
      const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + c)));
      const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + ldw + c)));
      for (int64_t i = 0; i < 4; ++i) {
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * k + c));
        s[i][0] = _mm256_add_epi32(s[i][0], _mm256_madd_epi16(x, w0));
        s[i][1] = _mm256_add_epi32(s[i][1], _mm256_madd_epi16(x, w1));
      }
    }
    for (int64_t i = 0; i < rows; ++i)
      for (int j = 0; j < 2; ++j) {
        alignas(32) int32_t lanes[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s[i][j]);
        for (int32_t v : lanes) acc[i][j] += v;
      }
  }
  c_tail = k16;
#endif
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = c_tail; c < k; ++c) {
      acc[i][0] += int32_t(a[i * k + c]) * w[c];
      acc[i][1] += int32_t(a[i * k + c]) * w[ldw + c];
    }
}

template <class T>
void int8_matmul_t(const Int8MatmulArgs& a, int64_t begin, int64_t end) {
  const int64_t n_blocks = (a.n + a.n_block - 1) / a.n_block;
  std::vector<int16_t> quad(4 * a.k);  // 4 token rows widened to int16 (zeros past the last token)
  for (int64_t task = begin; task < end; ++task) {
    const int64_t m0 = task / n_blocks * a.m_block, m1 = std::min(a.m, m0 + a.m_block);
    const int64_t n0 = task % n_blocks * a.n_block, n1 = std::min(a.n, n0 + a.n_block);
    for (int64_t t = m0; t < m1; t += 4) {
      const int64_t rows = std::min<int64_t>(4, m1 - t);
      std::fill(quad.begin(), quad.end(), int16_t(0));
      for (int64_t i = 0; i < rows; ++i) {
        const int8_t* src = a.codes + (t + i) * a.codes_stride;
        for (int64_t c = 0; c < a.k; ++c) quad[i * a.k + c] = src[c];
      }
      for (int64_t c = n0; c < n1; c += 2) {
        // an odd last channel pairs with itself (computed twice, stored once)
        const int64_t ldw = c + 1 < n1 ? a.k : 0;
        int64_t acc[4][2];
        dots_4x2(quad.data(), rows, a.weight + c * a.k, ldw, a.k, acc);
        for (int64_t i = 0; i < rows; ++i)
          for (int64_t j = 0; j < (ldw ? 2 : 1); ++j) {
            const int64_t sum = acc[i][j] + (a.bias ? a.bias[c + j] : 0);
            const float v = float(sum) * a.descale[c + j] * a.row_scale[t + i];
            static_cast<T*>(a.out)[(t + i) * a.out_stride + c + j] = from_float<T>(v);
          }
      }
    }
  }
}

}  // namespace

void int8_matmul(const Int8MatmulArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { int8_matmul_t<scalar_t>(a, begin, end); });
}

void quant_rows(const QuantRowsArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { quant_rows_t<scalar_t>(a, begin, end); });
}

void cache_write(const CacheWriteArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { cache_write_t<scalar_t>(a, begin, end); });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
