#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// (up + 1) * gate * sigmoid(alpha * gate) after gate = min(gate, limit), up = clamp(up, +-limit).
inline f32x8 swiglu_oai8(f32x8 g, f32x8 u, float alpha, float limit) {
  g = vmin(g, splat(limit));
  u = vclamp(u, -limit, limit);
  return (u + 1.0f) * g * vsigmoid(g * alpha);
}
inline float swiglu_oai1(float g, float u, float alpha, float limit) {
  g = g < limit ? g : limit;
  u = clampf(u, -limit, limit);
  return (u + 1.0f) * g * sigmoid(alpha * g);
}

// The gate and up values at i of the next row (`next`: the row itself on a task's last row), asked for from the
// caches one step at a time while this row is computed: DRAM works alongside the arithmetic (silu_and_mul and
// swiglu_quant 4096 x 7168 bf16: 8-12 % faster, interleaved in one process).
template <class T>
inline void ask_next_row(const T* next, int64_t d, int64_t i) {
  prefetch_bytes(next + i, 2 * kVec * int64_t(sizeof(T)));  // one step's values: half a line for bf16, one for fp32
  prefetch_bytes(next + d + i, 2 * kVec * int64_t(sizeof(T)));
}

template <class T>
void glu_rows_t(const GluArgs& a, int64_t begin, int64_t end) {
  const int64_t d = a.d;
  auto store = [stream = a.stream](T* p, f32x8 v) { stream ? store8_stream(p, v) : store8(p, v); };
  for (int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_stride;
    T* out = static_cast<T*>(a.out) + r * a.out_stride;
    int64_t i = 0;
    if (a.kind == GluKind::silu_and_mul) {
      const T* next = r + 1 < end ? x + a.x_stride : x;
      for (; i + 2 * kVec <= d; i += 2 * kVec) {
        ask_next_row(next, d, i);
        const f32x8x2 g = load16(x + i), u = load16(x + d + i);
        store16(out + i, {vsilu(g.lo) * u.lo, vsilu(g.hi) * u.hi}, a.stream);
      }
      for (; i + kVec <= d; i += kVec) store(out + i, vsilu(load8(x + i)) * load8(x + d + i));
      for (; i < d; ++i) out[i] = from_float<T>(silu(to_float(x[i])) * to_float(x[d + i]));
    } else {
      for (; i + kVec <= d; i += kVec) {
        f32x8 g, u;
        if constexpr (kSplitsPairs<T>) {  // the (gate, up) pairs come apart in the load itself
          const f32x8x2 v = load16(x + 2 * i);
          g = v.lo, u = v.hi;
        } else {
          const f32x8 lo = load8(x + 2 * i), hi = load8(x + 2 * i + kVec);
          g = __builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14);
          u = __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15);
        }
        store(out + i, swiglu_oai8(g, u, a.alpha, a.limit));
      }
      for (; i < d; ++i)
        out[i] = from_float<T>(swiglu_oai1(to_float(x[2 * i]), to_float(x[2 * i + 1]), a.alpha, a.limit));
    }
  }
}

inline f32x8 swiglu8(f32x8 g, f32x8 u, bool do_limit, float limit) {
  f32x8 s = vsilu(g);
  if (do_limit) {
    s = vmin(s, splat(limit));
    u = vclamp(u, -limit, limit);
  }
  return s * u;
}

template <class T>
void swiglu_quant_rows_t(const SwigluQuantArgs& a, int64_t begin, int64_t end) {
  const int64_t d = a.d;
  const int64_t padded = (d + kVec - 1) / kVec * kVec;
  std::vector<float> y(padded, 0.f);  // one row of the activation, reused across this task's rows
  for (int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_stride;
    int8_t* q = a.q + r * a.q_stride;
    // y is kept in load16<T>'s order per block of 16 (the quantization below writes q back in memory order).
    f32x8 max_lo = splat(0.f), max_hi = splat(0.f);
    int64_t i = 0;
    const T* next = r + 1 < end ? x + a.x_stride : x;
    for (; i + 2 * kVec <= d; i += 2 * kVec) {
      ask_next_row(next, d, i);
      const f32x8x2 g = load16(x + i), u = load16(x + d + i);
      const f32x8 lo = swiglu8(g.lo, u.lo, a.do_limit, a.limit), hi = swiglu8(g.hi, u.hi, a.do_limit, a.limit);
      store8(y.data() + i, lo);
      store8(y.data() + i + kVec, hi);
      max_lo = vmax(max_lo, vabs(lo));
      max_hi = vmax(max_hi, vabs(hi));
    }
    for (; i + kVec <= d; i += kVec) {
      f32x8 v = swiglu8(load8(x + i), load8(x + d + i), a.do_limit, a.limit);
      store8(y.data() + i, v);
      max_lo = vmax(max_lo, vabs(v));
    }
    float max_abs = reduce_max(vmax(max_lo, max_hi));
    for (; i < d; ++i) {
      float s = silu(to_float(x[i])), u = to_float(x[d + i]);
      if (a.do_limit) {
        s = s < a.limit ? s : a.limit;
        u = clampf(u, -a.limit, a.limit);
      }
      y[i] = s * u;
      max_abs = std::fabs(y[i]) > max_abs ? std::fabs(y[i]) : max_abs;
    }
    const float scale = max_abs / 127.0f;
    a.scale[r] = scale;
    if (!(scale > 0.f)) {  // an all-zero row quantizes to zeros (and a NaN row too, with a NaN scale)
      std::fill(q, q + d, int8_t(0));
      continue;
    }
    // y / scale exactly as the reference divides (so the floor lands where its does), at a multiply's cost;
    // a scale so small that 1 / scale overflows (max|y| < ~1e-36) takes true divisions.
    const float inv = 1.0f / scale;
    const bool fast = std::isfinite(inv);
    auto code = [&](f32x8 v) {  // floor(v / scale + 0.5), integral and within what the int8 packs saturate
      return vfloor(vclamp((fast ? vdiv_by(v, scale, inv) : v / scale) + 0.5f, -129.f, 128.f));
    };
    int64_t j = 0;
    for (; j + 2 * kVec <= d; j += 2 * kVec)
      store16_int8_rint<T>(q + j, {code(load8(y.data() + j)), code(load8(y.data() + j + kVec))});
    for (; j + kVec <= d; j += kVec) store8_int8(q + j, code(load8(y.data() + j)));
    for (; j < d; ++j) q[j] = int8_t(clampf(std::floor(y[j] / scale + 0.5f), -128.f, 127.f));
  }
}

}  // namespace

void glu_rows(const GluArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { glu_rows_t<scalar_t>(a, begin, end); });
  if (a.stream) stream_fence();
}

void swiglu_quant_rows(const SwigluQuantArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { swiglu_quant_rows_t<scalar_t>(a, begin, end); });
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
