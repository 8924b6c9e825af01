// ISA multiversioning. Kernel files are compiled once per ISA (see SglNpuCoreConfig.cmake) inside
// `namespace SGL_NPU_ISA`; ops call SGL_NPU_ISA_CALL(fn, args...) to take the best one this CPU runs.
#pragma once
#include <cstdlib>
#include <cstring>

namespace sgl_npu_core {

// Whether the avx2 kernels run: the CPU has AVX2, FMA and F16C, and SGL_NPU_CPU_ISA=generic does not force
// the portable ones (the tests run both this way).
inline bool cpu_has_avx2() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool ok = [] {
    const char* forced = std::getenv("SGL_NPU_CPU_ISA");
    if (forced != nullptr && std::strcmp(forced, "generic") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return ok;
#else
  return false;
#endif
}

}  // namespace sgl_npu_core

// Declares `decl` in every ISA namespace this build has.
#if defined(SGL_NPU_HAVE_AVX2)
#define SGL_NPU_DECLARE_PER_ISA(...) \
  namespace generic {                \
  __VA_ARGS__;                       \
  }                                  \
  namespace avx2 {                   \
  __VA_ARGS__;                       \
  }
#define SGL_NPU_ISA_CALL(fn, ...) (::sgl_npu_core::cpu_has_avx2() ? avx2::fn(__VA_ARGS__) : generic::fn(__VA_ARGS__))
#else
#define SGL_NPU_DECLARE_PER_ISA(...) \
  namespace generic {                \
  __VA_ARGS__;                       \
  }
#define SGL_NPU_ISA_CALL(fn, ...) generic::fn(__VA_ARGS__)
#endif
