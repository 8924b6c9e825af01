// ISA multiversioning. Kernel files are compiled once per ISA (see SglNpuCoreConfig.cmake) inside
// `namespace SGL_NPU_ISA`; ops call SGL_NPU_ISA_CALL(fn, args...) to take the best one this CPU runs.
#pragma once
#include <cstdlib>
#include <cstring>

namespace sgl_npu_core {

// The kernel variants, each a superset of the one before.
enum class CpuIsa { generic, avx2, avx512 };

// The best variant this CPU runs, capped by SGL_NPU_CPU_ISA=generic|avx2 (the tests rerun the kernels that way).
// avx2 needs AVX2, FMA and F16C; avx512 adds AVX-512 F/BW/DQ/VL and BF16 (one-instruction bf16 rounding).
inline CpuIsa cpu_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const CpuIsa isa = [] {
    const char* cap = std::getenv("SGL_NPU_CPU_ISA");
    if (cap != nullptr && std::strcmp(cap, "generic") == 0) return CpuIsa::generic;
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")))
      return CpuIsa::generic;
    if (cap != nullptr && std::strcmp(cap, "avx2") == 0) return CpuIsa::avx2;
    const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                        __builtin_cpu_supports("avx512bf16");
    return avx512 ? CpuIsa::avx512 : CpuIsa::avx2;
  }();
  return isa;
#else
  return CpuIsa::generic;
#endif
}

}  // namespace sgl_npu_core

// The helpers whose code depends on the ISA a file is compiled for (dtype.h's conversions, vec.h) live in an inline
// namespace named after it: isa_generic / isa_avx2 / isa_avx512 in the kernel files (SGL_NPU_ISA), isa_host in the
// others. An inline function that the compiler emits out of line is then a symbol of its own ISA's; with one name
// for all, the linker keeps a single body, the first it meets (by the link order the host or the generic one), and
// every variant calls that. std templates the kernel files use (std::vector's members, std::fill) still link so: one
// copy, the host's or the generic one (slower at worst, and no AVX-512 code on a CPU without it).
#define SGL_NPU_CAT_(a, b) a##b
#define SGL_NPU_CAT(a, b) SGL_NPU_CAT_(a, b)
#if defined(SGL_NPU_ISA)
#define SGL_NPU_CODEGEN SGL_NPU_CAT(isa_, SGL_NPU_ISA)
#else
#define SGL_NPU_CODEGEN isa_host
#endif

// Declares `decl` in every ISA namespace this build has, and SGL_NPU_ISA_CALL picks the best one that runs.
#define SGL_NPU_DECLARE_IN_NAMESPACE(ns, ...) \
  namespace ns {                              \
  __VA_ARGS__;                                \
  }
#if defined(SGL_NPU_HAVE_AVX512)
#define SGL_NPU_DECLARE_PER_ISA(...)                 \
  SGL_NPU_DECLARE_IN_NAMESPACE(generic, __VA_ARGS__) \
  SGL_NPU_DECLARE_IN_NAMESPACE(avx2, __VA_ARGS__)    \
  SGL_NPU_DECLARE_IN_NAMESPACE(avx512, __VA_ARGS__)
#define SGL_NPU_ISA_CALL(fn, ...)                                                        \
  (::sgl_npu_core::cpu_isa() == ::sgl_npu_core::CpuIsa::avx512 ? avx512::fn(__VA_ARGS__) \
   : ::sgl_npu_core::cpu_isa() == ::sgl_npu_core::CpuIsa::avx2 ? avx2::fn(__VA_ARGS__)   \
                                                               : generic::fn(__VA_ARGS__))
#elif defined(SGL_NPU_HAVE_AVX2)
#define SGL_NPU_DECLARE_PER_ISA(...)                 \
  SGL_NPU_DECLARE_IN_NAMESPACE(generic, __VA_ARGS__) \
  SGL_NPU_DECLARE_IN_NAMESPACE(avx2, __VA_ARGS__)
#define SGL_NPU_ISA_CALL(fn, ...) \
  (::sgl_npu_core::cpu_isa() != ::sgl_npu_core::CpuIsa::generic ? avx2::fn(__VA_ARGS__) : generic::fn(__VA_ARGS__))
#else
#define SGL_NPU_DECLARE_PER_ISA(...) SGL_NPU_DECLARE_IN_NAMESPACE(generic, __VA_ARGS__)
#define SGL_NPU_ISA_CALL(fn, ...) generic::fn(__VA_ARGS__)
#endif
