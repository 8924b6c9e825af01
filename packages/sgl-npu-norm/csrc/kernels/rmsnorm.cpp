#include <cmath>
#include <type_traits>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// The vectors a block of 32 values runs on: f32xW for bf16, f32x8 otherwise. Where the arithmetic per value is this
// light, zmm pays only for bf16, whose loads take two instructions per 32 values (tools/kernel_ab, 64 x 7168, against
// the code before blocks of 32; rmsnorm / fused_add_rmsnorm: bf16 on zmm 1.13-1.28x / 1.11-1.12x; fp16 on zmm 0.89x /
// 0.86x, its 16-lane conversions costing more than two 8-lane ones, on f32x8 1.06x / 1.00x; fp32 on zmm 0.98x / 0.95x,
// on f32x8 1.05x / 0.99x).
template <class T>
using Vec32 = std::conditional_t<std::is_same_v<T, bf16_t>, f32xW, f32x8>;
template <class T>
constexpr int kVecs32 = 32 / kLanes<Vec32<T>>;

template <class T>
const T* row(const void* base, int64_t stride, int64_t r) {
  return static_cast<const T*>(base) + r * stride;
}
template <class T>
T* row(void* base, int64_t stride, int64_t r) {
  return static_cast<T*>(base) + r * stride;
}

// Sum of squares of `src` (or of src = x + residual, rounded to T and stored at `sum`), 32 values per step in
// load32<T>'s order (the sum does not care). Each step asks for the same place of the next rows (`x_next`,
// `res_next`; null: none): DRAM works alongside the arithmetic (rmsnorm 4096 x 7168 bf16: 6-14 % faster,
// fused_add_rmsnorm 2-10 %, interleaved in one process). Rows that fit the caches ask for nothing: the requests
// only cost instructions there (rmsnorm 128 x 7168 bf16 / fp16 1.10-1.19x without them).
template <class T>
float sum_squares(const T* x, const T* res, T* sum, int64_t n, const T* x_next, const T* res_next) {
  // 2 * kVecs32<T> accumulators: one FMA chain would wait out its latency on every vector.
  Vec32<T> acc[2 * kVecs32<T>] = {};
  auto block32 = [&](int64_t j, Vec32<T>* into) {
    Vec32<T> v[kVecs32<T>];
    load32(x + j, v);
    if (res) {
      Vec32<T> r[kVecs32<T>];
      load32(res + j, r);
      for (int k = 0; k < kVecs32<T>; ++k) v[k] = v[k] + r[k];
      store32(sum + j, v);
      load32(sum + j, v);  // re-read: the norm sees the sum rounded to T
    }
    for (int k = 0; k < kVecs32<T>; ++k) into[k] += v[k] * v[k];
  };
  auto ask = [&](int64_t j, int64_t count) {
    if (x_next) prefetch_bytes(x_next + j, count * int64_t(sizeof(T)));  // whole lines for bf16 / fp16 / fp32
    if (res_next) prefetch_bytes(res_next + j, count * int64_t(sizeof(T)));
  };
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    ask(i, 64);
    block32(i, acc);
    block32(i + 32, acc + kVecs32<T>);
  }
  if (i + 32 <= n) {
    ask(i, 32);
    block32(i, acc);
    i += 32;
  }
  for (int k = 1; k < 2 * kVecs32<T>; ++k) acc[0] += acc[k];
  f32x8 acc8 = splat(0.f);
  for (; i + kVec <= n; i += kVec) {
    f32x8 v = load8(x + i);
    if (res) {
      store8(sum + i, v + load8(res + i));
      v = load8(sum + i);
    }
    acc8 += v * v;
  }
  float ss = reduce_add(acc[0]) + reduce_add(acc8);
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

// A weight or bias as the rows read it: fp32 in load16<T>'s order (ChannelParam's copy, read with plain loads), or
// (kSame) T itself, converted as it is read. The copy is twice the bytes of a bf16 / fp16 parameter, and each row
// streams all of it through the caches (rmsnorm bf16, alternated in one process: 128 x 4096 1.12x, 128 x 7168 1.08x,
// 4096 rows unchanged; 1 x 7168 skips the per-call conversion, 5.4 -> 3.9 us).
template <class T, bool kSame>
struct Channel {
  const float* f32;
  const T* same;

  bool present() const { return kSame ? same != nullptr : f32 != nullptr; }
  f32x8x2 at16(int64_t i) const {
    if constexpr (kSame) return load16(same + i);
    return {load8(f32 + i), load8(f32 + i + kVec)};
  }
  void at32(int64_t i, Vec32<T>* v) const {
    if constexpr (kSame)
      load32(same + i, v);
    else
      from_halves<T>(at16(i), at16(i + 16), v);
  }
  f32x8 at8(int64_t i) const {  // memory order (the tail past the last block of 16)
    if constexpr (kSame) return load8(same + i);
    return load8(f32 + i);
  }
  float at(int64_t i) const {
    if constexpr (kSame) return to_float(same[i]);
    return f32[i];
  }
};

template <class T, bool kQuant, bool kSame>
void norm_rows(const NormArgs& a, int64_t begin, int64_t end) {
  const int64_t n = a.hidden;
  const Channel<T, kSame> w{a.weight, static_cast<const T*>(a.weight_same)};
  const Channel<T, kSame> b{a.bias, static_cast<const T*>(a.bias_same)};
  const float* qs = a.quant_scale;
  const float* qo = a.quant_offset;
  // With a bias, x * inv * w + b in one expression: GCC fuses the add into an FMA wherever it builds FMAs. Split
  // over statements, whether it fused came down to how it laid out each variant's loop, and weights read as they
  // are and fp32 copies of them gave results an ulp apart.
  auto affine32 = [&](Vec32<T>* v, float inv, int64_t i) {
    Vec32<T> wv[kVecs32<T>], bv[kVecs32<T>];
    w.at32(i, wv);
    if (!b.present()) {
      for (int k = 0; k < kVecs32<T>; ++k) v[k] = v[k] * inv * wv[k];
      return;
    }
    b.at32(i, bv);
    for (int k = 0; k < kVecs32<T>; ++k) v[k] = v[k] * inv * wv[k] + bv[k];
  };
  auto affine16 = [&](f32x8x2 v, float inv, int64_t i) {
    const f32x8x2 wv = w.at16(i);
    if (!b.present()) return f32x8x2{v.lo * inv * wv.lo, v.hi * inv * wv.hi};
    const f32x8x2 bv = b.at16(i);
    return f32x8x2{v.lo * inv * wv.lo + bv.lo, v.hi * inv * wv.hi + bv.hi};
  };
  auto affine8 = [&](f32x8 v, float inv, int64_t i) {
    return b.present() ? v * inv * w.at8(i) + b.at8(i) : v * inv * w.at8(i);
  };
  auto affine1 = [&](float v, float inv, int64_t i) { return v * inv * w.at(i) + (b.present() ? b.at(i) : 0.f); };
  auto quant = [&](f32x8 v, int64_t i) {  // v * scale + offset, to be rounded half to even and saturated
    v = v * load8(qs + i);
    return qo ? v + load8(qo + i) : v;
  };
  for (int64_t r = begin; r < end; ++r) {
    const T* x = row<T>(a.x, a.x_stride, r);
    const T* res = a.residual ? row<T>(a.residual, a.residual_stride, r) : nullptr;
    T* sum = a.residual ? row<T>(a.sum, a.sum_stride, r) : nullptr;
    const bool ask = a.ask_next_rows && r + 1 < end;  // the next rows (the task's own last row has none)
    const float ss =
        sum_squares(x, res, sum, n, ask ? x + a.x_stride : nullptr, ask && res ? res + a.residual_stride : nullptr);
    const float inv = 1.0f / std::sqrt(ss / float(n) + a.eps);
    const T* src = res ? sum : x;
    int64_t i = 0;
    if constexpr (kQuant) {
      int8_t* q = row<int8_t>(a.out, a.out_stride, r);
      for (; i + 2 * kVec <= n; i += 2 * kVec) {
        const f32x8x2 v = affine16(load16(src + i), inv, i);
        store16_int8_rint<T>(q + i, {quant(v.lo, i), quant(v.hi, i + kVec)});
      }
      for (; i + kVec <= n; i += kVec) store8_int8(q + i, vrint(quant(affine8(load8(src + i), inv, i), i)));
      for (; i < n; ++i) {
        float v = affine1(to_float(src[i]), inv, i);
        v = v * qs[i] + (qo ? qo[i] : 0.f);
        q[i] = v != v ? int8_t(-128) : int8_t(std::nearbyint(clampf(v, -128.f, 127.f)));  // NaN as the vectors give
      }
    } else {
      T* out = row<T>(a.out, a.out_stride, r);
      for (; i + 32 <= n; i += 32) {
        Vec32<T> v[kVecs32<T>];
        load32(src + i, v);
        affine32(v, inv, i);
        store32(out + i, v, a.stream);
      }
      for (; i + 2 * kVec <= n; i += 2 * kVec) store16(out + i, affine16(load16(src + i), inv, i), a.stream);
      for (; i + kVec <= n; i += kVec) {
        const f32x8 v = affine8(load8(src + i), inv, i);
        a.stream ? store8_stream(out + i, v) : store8(out + i, v);
      }
      for (; i < n; ++i) out[i] = from_float<T>(affine1(to_float(src[i]), inv, i));
    }
  }
}

}  // namespace

void rmsnorm_rows(const NormArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    // The weight and bias come both as fp32 or both in the dtype of x (see ChannelParam).
    if (a.weight_same && a.quant_scale)
      norm_rows<scalar_t, true, true>(a, begin, end);
    else if (a.weight_same)
      norm_rows<scalar_t, false, true>(a, begin, end);
    else if (a.quant_scale)
      norm_rows<scalar_t, true, false>(a, begin, end);
    else
      norm_rows<scalar_t, false, false>(a, begin, end);
  });
  if (a.stream) stream_fence();
}

void group_sum_squares_rows(const GroupSquaresArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] {
    using T = scalar_t;
    for (int64_t r = begin; r < end; ++r) {
      const T* x = row<T>(a.x, a.x_stride, r);
      const T* next = r + 1 == end ? x : x + a.x_stride;  // the task's own last row has no next row
      for (int64_t g = 0, at = 0; g < a.groups; at += a.widths[g++])
        a.out[r * a.groups + g] = sum_squares<T>(x + at, nullptr, nullptr, a.widths[g], next + at, nullptr);
    }
  });
}

void to_float32(DType dtype, const void* src, float* dst, int64_t n, float add, DType order) {
  SGL_NPU_DISPATCH_FLOAT(dtype, [&] {
    const scalar_t* s = static_cast<const scalar_t*>(src);
    int64_t i = 0;
    // Eight at a time: one widening load per 8 values (fp16 weights of 7168 took ~5 us one by one).
    for (; i + kVec <= n; i += kVec) store8(dst + i, load8(s + i) + add);
    for (; i < n; ++i) dst[i] = to_float(s[i]) + add;
  });
  SGL_NPU_DISPATCH_FLOAT(order, [&] { permute16<scalar_t>(dst, n); });
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
