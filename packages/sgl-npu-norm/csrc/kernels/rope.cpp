#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// v rounded to T and back (what storing and reloading the value would give).
template <class T>
inline f32x8 round_to(f32x8 v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    T tmp[kVec];
    store8(tmp, v);
    return load8(tmp);
  }
}

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

// One head: y (fp32, `width` values, already normed and rounded) rotated and stored to out.
template <class T>
void rotate_store(const HeadNormRopeArgs& a, const float* y, const float* c_tab, const float* s_tab, T* out) {
  const int64_t r = a.rope_dim, half = r / 2, w = a.width;
  int64_t j = 0;
  if (a.neox) {
    for (; j + kVec <= half; j += kVec) {
      const f32x8 lo = load8(y + j), hi = load8(y + j + half);
      store8(out + j, lo * load8(c_tab + j) + hi * load8(s_tab + j));
      store8(out + j + half, hi * load8(c_tab + j + half) + lo * load8(s_tab + j + half));
    }
    for (; j < half; ++j) {
      const float lo = y[j], hi = y[j + half];
      out[j] = from_float<T>(lo * c_tab[j] + hi * s_tab[j]);
      out[j + half] = from_float<T>(hi * c_tab[j + half] + lo * s_tab[j + half]);
    }
    j = r;
  } else {
    for (; j + kVec <= r; j += kVec) {
      const f32x8 v = load8(y + j);
      const f32x8 swapped = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
      store8(out + j, v * load8(c_tab + j) + swapped * load8(s_tab + j));
    }
    for (; j < r; j += 2) {
      const float even = y[j], odd = y[j + 1];
      out[j] = from_float<T>(even * c_tab[j] + odd * s_tab[j]);
      out[j + 1] = from_float<T>(odd * c_tab[j + 1] + even * s_tab[j + 1]);
    }
  }
  for (; j + kVec <= w; j += kVec) store8(out + j, load8(y + j));
  for (; j < w; ++j) out[j] = from_float<T>(y[j]);
}

template <class T, class C>
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
      // Load the head as fp32 (x may alias out: everything is read before anything is written).
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
      if (a.norm) {
        const float rstd =
            a.rstd ? a.rstd[t * a.rstd_stride] : 1.0f / std::sqrt((ss + reduce_add(acc0 + acc1)) / float(w) + a.eps);
        const float* wt = a.weight ? a.weight + h * a.param_head_stride : nullptr;
        const float* b = a.bias ? a.bias + h * a.param_head_stride : nullptr;
        j = 0;
        for (; j + kVec <= w; j += kVec) {
          f32x8 v = load8(y + j) * rstd;
          if (wt) v = v * load8(wt + j);
          if (b) v = v + load8(b + j);
          store8(y + j, round_to<T>(v));
        }
        for (; j < w; ++j) {
          float v = y[j] * rstd * (wt ? wt[j] : 1.f) + (b ? b[j] : 0.f);
          y[j] = to_float(from_float<T>(v));
        }
      }
      rotate_store<T>(a, y, c_tab, s_tab, out);
    }
  }
}

}  // namespace

void head_norm_rope_tokens(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    using T = scalar_t;
    SGL_NPU_DISPATCH_FLOAT(a.table_dtype, [&] { tokens<T, scalar_t>(a, begin, end); });
  });
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
