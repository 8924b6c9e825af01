// Element types of the kernels and their fp32 conversions. Framework-free: kernels include this, not torch.
#pragma once
#include <cstdint>
#include <cstring>

#include "sgl_npu_core/isa.h"
#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace sgl_npu_core {

enum class DType : int8_t { f32, f16, bf16 };

// 16-bit floats are stored as raw bits; all math happens in fp32.
struct bf16_t {
  uint16_t bits;
};
struct fp16_t {
  uint16_t bits;
};

inline namespace SGL_NPU_CODEGEN {  // see isa.h

inline float to_float(float v) { return v; }
inline float to_float(bf16_t v) {
  uint32_t u = uint32_t(v.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// With F16C one instruction each way; GCC otherwise converts _Float16 through a library call (~5 us for 7168 values).
inline float to_float(fp16_t v) {
#if defined(__F16C__)
  return _cvtsh_ss(v.bits);
#else
  _Float16 h;
  std::memcpy(&h, &v.bits, 2);
  return float(h);
#endif
}

template <class T>
T from_float(float f);
template <>
inline float from_float<float>(float f) {
  return f;
}
template <>
inline bf16_t from_float<bf16_t>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (f != f) return bf16_t{uint16_t((u >> 16) | 0x40)};  // keep NaN a (quiet) NaN
  u += 0x7FFFu + ((u >> 16) & 1u);                        // round to nearest even
  return bf16_t{uint16_t(u >> 16)};
}
template <>
inline fp16_t from_float<fp16_t>(float f) {
#if defined(__F16C__)
  return fp16_t{uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT))};
#else
  _Float16 h = _Float16(f);
  fp16_t r;
  std::memcpy(&r.bits, &h, 2);
  return r;
#endif
}

}  // namespace SGL_NPU_CODEGEN

// Calls `body` with `scalar_t` bound to the storage type of `dtype`.
#define SGL_NPU_DISPATCH_FLOAT(dtype, ...)       \
  [&] {                                          \
    switch (dtype) {                             \
      case ::sgl_npu_core::DType::f32: {         \
        using scalar_t = float;                  \
        return __VA_ARGS__();                    \
      }                                          \
      case ::sgl_npu_core::DType::f16: {         \
        using scalar_t = ::sgl_npu_core::fp16_t; \
        return __VA_ARGS__();                    \
      }                                          \
      default: {                                 \
        using scalar_t = ::sgl_npu_core::bf16_t; \
        return __VA_ARGS__();                    \
      }                                          \
    }                                            \
  }()

}  // namespace sgl_npu_core
