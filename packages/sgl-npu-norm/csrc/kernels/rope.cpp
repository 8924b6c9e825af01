#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// Per-token rotation tables C and S over rope_dim dims (see HeadNormRopeArgs), the sign folded into S.
template <class C>
void fill_tables(const HeadNormRopeArgs& a, int64_t token, float* c_tab, float* s_tab) {
  int64_t row = token;
  if (a.positions)
    row = a.positions_int64 ? static_cast<const int64_t*>(a.positions)[token]
                            : static_cast<const int32_t*>(a.positions)[token];
  const C* cos = static_cast<const C*>(a.cos) + row * a.table_stride;
  const C* sin = static_cast<const C*>(a.sin) + row * a.table_stride;
  const int64_t half = a.rope_dim / 2;
  for (int64_t j = 0; j < a.rope_dim; ++j) {
    const int64_t k = a.neox ? (a.full_width ? j : j % half) : j / 2;
    const bool first = a.neox ? j < half : j % 2 == 0;  // the element whose partner is added negated
    c_tab[j] = to_float(cos[k]);
    s_tab[j] = first ? -to_float(sin[k]) : to_float(sin[k]);
  }
}

// The normed value of a head's dims [j, j+8) (or of one dim): y * rstd * w + b rounded to T, as the unfused
// norm would store it; y itself without a norm.
template <class T>
struct Normed {
  const float* y;
  bool norm;
  float rstd;
  const float* w;  // optional
  const float* b;  // optional

  f32x8 operator()(int64_t j) const {
    f32x8 v = load8(y + j);
    if (!norm) return v;
    v = v * rstd;
    if (w) v = v * load8(w + j);
    if (b) v = v + load8(b + j);
    return round_to<T>(v);
  }
  float at(int64_t j) const {
    if (!norm) return y[j];
    return to_float(from_float<T>(y[j] * rstd * (w ? w[j] : 1.f) + (b ? b[j] : 0.f)));
  }
};

// One head: the normed values rotated over rope_dim dims and stored (the rest stored as they are).
template <class T, bool kStream>
void rotate_store(const HeadNormRopeArgs& a, const Normed<T>& y, const float* c_tab, const float* s_tab, T* out) {
  auto store = [](T* p, f32x8 v) { kStream ? store8_stream(p, v) : store8(p, v); };
  const int64_t r = a.rope_dim, half = r / 2, w = a.width;
  int64_t j = 0;
  if (a.neox) {
    for (; j + kVec <= half; j += kVec) {
      const f32x8 lo = y(j), hi = y(j + half);
      store(out + j, lo * load8(c_tab + j) + hi * load8(s_tab + j));
      store(out + j + half, hi * load8(c_tab + j + half) + lo * load8(s_tab + j + half));
    }
    for (; j < half; ++j) {
      const float lo = y.at(j), hi = y.at(j + half);
      out[j] = from_float<T>(lo * c_tab[j] + hi * s_tab[j]);
      out[j + half] = from_float<T>(hi * c_tab[j + half] + lo * s_tab[j + half]);
    }
    j = r;
  } else {
    for (; j + kVec <= r; j += kVec) {
      const f32x8 v = y(j);
      const f32x8 swapped = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
      store(out + j, v * load8(c_tab + j) + swapped * load8(s_tab + j));
    }
    for (; j < r; j += 2) {
      const float even = y.at(j), odd = y.at(j + 1);
      out[j] = from_float<T>(even * c_tab[j] + odd * s_tab[j]);
      out[j + 1] = from_float<T>(odd * c_tab[j + 1] + even * s_tab[j + 1]);
    }
  }
  for (; j + kVec <= w; j += kVec) store(out + j, y(j));
  for (; j < w; ++j) out[j] = from_float<T>(y.at(j));
}

template <class T, class C, bool kStream>
void tokens(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  const int64_t w = a.width;
  std::vector<float> buf(w + 2 * a.rope_dim);
  float* y = buf.data();
  float* c_tab = y + w;
  float* s_tab = c_tab + a.rope_dim;
  for (int64_t t = begin; t < end; ++t) {
    if (a.rope_dim) fill_tables<C>(a, t, c_tab, s_tab);
    for (int64_t h = 0; h < a.heads; ++h) {
      const T* x = static_cast<const T*>(a.x) + t * a.x_token_stride + h * a.x_head_stride;
      T* out = static_cast<T*>(a.out) + t * a.out_token_stride + h * a.out_head_stride;
      // The head as fp32 and its sum of squares (x may alias out: all of it is read before anything is written).
      f32x8 acc0 = splat(0.f), acc1 = splat(0.f);
      float ss = 0.f;
      int64_t j = 0;
      for (; j + 2 * kVec <= w; j += 2 * kVec) {
        const f32x8 u = load8(x + j), v = load8(x + j + kVec);
        store8(y + j, u);
        store8(y + j + kVec, v);
        acc0 += u * u;
        acc1 += v * v;
      }
      for (; j < w; ++j) {
        y[j] = to_float(x[j]);
        ss += y[j] * y[j];
      }
      Normed<T> normed{y, a.norm, 1.f, nullptr, nullptr};
      if (a.norm) {
        normed.rstd =
            a.rstd ? a.rstd[t * a.rstd_stride] : 1.0f / std::sqrt((ss + reduce_add(acc0 + acc1)) / float(w) + a.eps);
        normed.w = a.weight ? a.weight + h * a.param_head_stride : nullptr;
        normed.b = a.bias ? a.bias + h * a.param_head_stride : nullptr;
      }
      rotate_store<T, kStream>(a, normed, c_tab, s_tab, out);
    }
  }
  if (kStream) stream_fence();
}

}  // namespace

void head_norm_rope_tokens(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    using T = scalar_t;
    SGL_NPU_DISPATCH_FLOAT(a.table_dtype, [&] {
      if (a.stream)
        tokens<T, scalar_t, true>(a, begin, end);
      else
        tokens<T, scalar_t, false>(a, begin, end);
    });
  });
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
