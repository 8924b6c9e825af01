#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// The activations take N vectors at a time (see vexp_n): whole blocks of 32 values as load32's kW32 vectors (zmm
// where AVX-512 is built; swiglu_oai's as four f32x8), N = 2 or 1 for the rest of a row. exp is computed to what the
// result keeps (Accuracy): the precision of T where it is stored as T, and kFp16 for swiglu_quant's activation. One
// step from the reference's rounding (256 x 7168, normal values of sigma 2): bf16 0.44-0.47 % of outputs, fp16
// 0.12 %, fp32 none beyond 4.2e-7 relative; swiglu_quant's codes ~1e-6 (as with kFp32). Against kFp32 (and, for bf16,
// AVX-512's 14-bit reciprocal estimate), alternated in one process: 1.05-1.36x.
template <class T>
constexpr Accuracy kStoredAccuracy = std::is_same_v<T, bf16_t>   ? Accuracy::kBf16
                                     : std::is_same_v<T, fp16_t> ? Accuracy::kFp16
                                                                 : Accuracy::kFp32;

// (up + 1) * gate * sigmoid(alpha * gate) after gate = min(gate, limit), up = clamp(up, +-limit); into g. The limits
// keep a NaN a NaN, as the reference's torch.clamp does. sigmoid times gate as gate / (1 + exp(-alpha * gate)), one
// division (see vsilu_n).
template <int N, Accuracy kAccuracy>
inline void swiglu_oai_n(f32x8* g, const f32x8* u, float alpha, float limit) {
  f32x8 e[N];
  for (int k = 0; k < N; ++k) {
    g[k] = vmin_keep_nan(g[k], limit);
    e[k] = g[k] * alpha;
  }
  vexp_n<N, kAccuracy, true, true>(e);  // exp(-alpha * gate): inf below ~-88.4, where gate / inf = -0
  for (int k = 0; k < N; ++k) g[k] = (vclamp_keep_nan(u[k], -limit, limit) + 1.0f) * g[k] / (1.0f + e[k]);
}
inline float swiglu_oai1(float g, float u, float alpha, float limit) {
  g = g > limit ? limit : g;  // a NaN stays one
  u = clampf(u, -limit, limit);
  return (u + 1.0f) * g * sigmoid(alpha * g);
}

// The gate and up values at [i, i + 32) of the next row (`next`: the row itself on a task's last row), asked for while
// this row is computed: DRAM works alongside the arithmetic (silu_and_mul and swiglu_quant 4096 x 7168 bf16: 8-12 %
// faster than no requests). Into L2 (prefetcht1), one request per line: the next row is wanted a row's arithmetic
// later (~2 us), and brought into L1 it evicted this row's values and the activation buffer first. Against requests
// into L1, alternated in one process at 4096 x 7168, two threads: swiglu_quant bf16 1.11x, fp16 1.04x, fp32 1.25x;
// silu_and_mul 1.08x / 1.03x / 1.18x. Two rows ahead instead of one: 1.00x.
template <class T>
inline void ask_next_row(const T* next, int64_t d, int64_t i) {
  prefetch_bytes<2>(next + i, 32 * int64_t(sizeof(T)));
  prefetch_bytes<2>(next + d + i, 32 * int64_t(sizeof(T)));
}

// The gate and up values at [i, i + 32) in load32's order, asking for the same place of the next row.
template <class T>
inline void gate_up32(const T* x, const T* next, int64_t d, int64_t i, f32xW* g, f32xW* u) {
  ask_next_row(next, d, i);
  load32(x + i, g);
  load32(x + d + i, u);
}

template <class T>
void glu_rows_t(const GluArgs& a, int64_t begin, int64_t end) {
  constexpr Accuracy kAccuracy = kStoredAccuracy<T>;
  const int64_t d = a.d;
  auto store = [stream = a.stream](T* p, f32x8 v) { stream ? store8_stream(p, v) : store8(p, v); };
  for (int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_stride;
    T* out = static_cast<T*>(a.out) + r * a.out_stride;
    int64_t i = 0;
    if (a.kind == GluKind::silu_and_mul) {
      const T* next = r + 1 < end ? x + a.x_stride : x;
      for (; i + 32 <= d; i += 32) {
        f32xW g[kW32], u[kW32];
        gate_up32(x, next, d, i, g, u);
        vsilu_n<kW32, kAccuracy>(g);
        for (int k = 0; k < kW32; ++k) g[k] = g[k] * u[k];
        store32(out + i, g, a.stream);
      }
      for (; i + 2 * kVec <= d; i += 2 * kVec) {
        const f32x8x2 g = load16(x + i), u = load16(x + d + i);
        f32x8 s[2] = {g.lo, g.hi};
        vsilu_n<2, kAccuracy>(s);
        store16(out + i, {s[0] * u.lo, s[1] * u.hi}, a.stream);
      }
      for (; i + kVec <= d; i += kVec) {
        f32x8 g = load8(x + i);
        vsilu_n<1, kAccuracy>(&g);
        store(out + i, g * load8(x + d + i));
      }
      for (; i < d; ++i) out[i] = from_float<T>(silu(to_float(x[i])) * to_float(x[d + i]));
    } else {
      auto gate_up = [x](int64_t i, f32x8& g, f32x8& u) {  // the (gate, up) pairs of outputs [i, i + 8)
        const f32x8x2 v = load16_evens_odds(x + 2 * i);
        g = v.lo, u = v.hi;
      };
      for (; i + 4 * kVec <= d; i += 4 * kVec) {
        f32x8 g[4], u[4];
        for (int k = 0; k < 4; ++k) gate_up(i + k * kVec, g[k], u[k]);
        swiglu_oai_n<4, kAccuracy>(g, u, a.alpha, a.limit);
        for (int k = 0; k < 4; ++k) store(out + i + k * kVec, g[k]);
      }
      for (; i + kVec <= d; i += kVec) {
        f32x8 g, u;
        gate_up(i, g, u);
        swiglu_oai_n<1, kAccuracy>(&g, &u, a.alpha, a.limit);
        store(out + i, g);
      }
      for (; i < d; ++i)
        out[i] = from_float<T>(swiglu_oai1(to_float(x[2 * i]), to_float(x[2 * i + 1]), a.alpha, a.limit));
    }
  }
}

// silu(gate) * up, both clamped to limit first when do_limit (silu from above, up on both sides); into g.
template <int N, class V>
inline void swiglu_n(V* g, const V* u, bool do_limit, float limit) {
  vsilu_n<N, Accuracy::kFp16>(g);
  for (int k = 0; k < N; ++k)
    g[k] = do_limit ? vmin_keep_nan(g[k], limit) * vclamp_keep_nan(u[k], -limit, limit) : g[k] * u[k];
}

template <class T>
void swiglu_quant_rows_t(const SwigluQuantArgs& a, int64_t begin, int64_t end) {
  const int64_t d = a.d;
  const int64_t padded = (d + kVec - 1) / kVec * kVec;
  std::vector<float> y(padded, 0.f);  // one row of the activation, reused across this task's rows
  for (int64_t r = begin; r < end; ++r) {
    const T* x = static_cast<const T*>(a.x) + r * a.x_stride;
    int8_t* q = a.q + r * a.q_stride;
    // y is kept in load32<T>'s order per block of 32 and load16<T>'s per block of 16 (the quantization below writes
    // q back in memory order). max|y| as bits (vabs_bits): a NaN anywhere in the row makes the scale NaN, as the
    // reference's amax does.
    typename UintVec<f32xW>::type max32[kW32] = {};
    u32x8 max8 = {};
    int64_t i = 0;
    const T* next = r + 1 < end ? x + a.x_stride : x;
    for (; i + 32 <= d; i += 32) {
      f32xW g[kW32], u[kW32];
      gate_up32(x, next, d, i, g, u);
      swiglu_n<kW32>(g, u, a.do_limit, a.limit);
      store32(y.data() + i, g);
      for (int k = 0; k < kW32; ++k) max32[k] = vmax_bits(max32[k], vabs_bits(g[k]));
    }
    if (i + 2 * kVec <= d) {
      const f32x8x2 gk = load16(x + i), uk = load16(x + d + i);
      f32x8 g[2] = {gk.lo, gk.hi}, u[2] = {uk.lo, uk.hi};
      swiglu_n<2>(g, u, a.do_limit, a.limit);
      std::memcpy(y.data() + i, g, sizeof g);
      max8 = vmax_bits(max8, vmax_bits(vabs_bits(g[0]), vabs_bits(g[1])));
      i += 2 * kVec;
    }
    for (; i + kVec <= d; i += kVec) {
      f32x8 g = load8(x + i);
      const f32x8 u = load8(x + d + i);
      swiglu_n<1>(&g, &u, a.do_limit, a.limit);
      store8(y.data() + i, g);
      max8 = vmax_bits(max8, vabs_bits(g));
    }
    for (int k = 1; k < kW32; ++k) max32[0] = vmax_bits(max32[0], max32[k]);
    uint32_t max_bits = std::max(reduce_max_bits(max32[0]), reduce_max_bits(max8));
    for (; i < d; ++i) {
      float s = silu(to_float(x[i])), u = to_float(x[d + i]);
      if (a.do_limit) {
        s = s > a.limit ? a.limit : s;  // a NaN stays one
        u = clampf(u, -a.limit, a.limit);
      }
      y[i] = s * u;
      max_bits = std::max(max_bits, abs_bits(y[i]));
    }
    const float scale = bitcast<float>(max_bits) / 127.0f;
    a.scale[r] = scale;
    if (!(scale > 0.f)) {  // an all-zero row quantizes to zeros (and a NaN row too, with a NaN scale)
      std::fill(q, q + d, int8_t(0));
      continue;
    }
    // y / scale + 0.5 as y * (1 / scale) + 0.5, one FMA: within an ulp of the reference's two roundings, so a code
    // differs only where that sum lies within ~1e-5 of an integer (y itself differs from torch's by a few ulps, its
    // exp being our own). Without the exact division (Markstein's correction, three instructions more per 8 values)
    // the op runs 1.08x faster at 4096 x 7168 and 1.12x at 128 x 7168 bf16 (alternated in one process). A scale so
    // small that 1 / scale overflows (max|y| < ~1e-36) takes true divisions.
    const float inv = 1.0f / scale;
    const bool fast = std::isfinite(inv);
    auto shift = [&](auto v) { return fast ? v * inv + 0.5f : v / scale + 0.5f; };  // floor(shift(y)): the code
    auto shifted = [&](int64_t j) { return shift(load8(y.data() + j)); };
    int64_t j = 0;
    for (; j + 32 <= d; j += 32) {
      f32xW v[kW32];
      load32(y.data() + j, v);
      for (int k = 0; k < kW32; ++k) v[k] = shift(v[k]);
      store32_int8_floor<T>(q + j, v, a.stream);
    }
    for (; j + 2 * kVec <= d; j += 2 * kVec) store16_int8_floor<T>(q + j, {shifted(j), shifted(j + kVec)}, a.stream);
    for (; j + kVec <= d; j += kVec) store8_int8(q + j, vfloor(vclamp(shifted(j), -129.f, 128.f)));
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
  if (a.stream) stream_fence();
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
