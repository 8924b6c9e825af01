// 8-wide fp32 vectors (GCC/Clang vector extensions: AVX2 ymm on x86-64-v3, two NEON/SSE registers
// elsewhere) with loads/stores that convert from/to the storage types. Framework-free.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "sgl_npu_core/dtype.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

// For the helpers of the kernels' inner loops that take or give vectors by pointer or in pairs: called out of line,
// the vectors travel through the stack (split_qkv_rmsnorm_rope's 16-wide path ran 2.4x slower once its file grew
// past what GCC inlines; attention's one-vector vexp had been out of line too).
#define SGL_NPU_INLINE inline __attribute__((always_inline))

namespace sgl_npu_core {
inline namespace SGL_NPU_CODEGEN {  // see isa.h

constexpr int kVec = 8;
typedef float f32x8 __attribute__((vector_size(32)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef _Float16 h16x8 __attribute__((vector_size(16)));

inline f32x8 splat(float v) { return f32x8{v, v, v, v, v, v, v, v}; }

template <class To, class From>
inline To bitcast(const From& v) {
  static_assert(sizeof(To) == sizeof(From));
  To r;
  std::memcpy(&r, &v, sizeof(To));
  return r;
}

inline f32x8 load8(const float* p) {
  f32x8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline f32x8 load8(const bf16_t* p) {
#if defined(__AVX2__)  // one widening load instead of GCC's split-and-insert sequence
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return bitcast<f32x8>(_mm256_slli_epi32(w, 16));
#else
  u16x8 h;
  std::memcpy(&h, p, sizeof h);
  return bitcast<f32x8>(__builtin_convertvector(h, u32x8) << 16);
#endif
}
inline f32x8 load8(const fp16_t* p) {
#if defined(__F16C__)  // GCC scalarizes the generic _Float16 vector conversion on x86
  return bitcast<f32x8>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#else
  h16x8 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, f32x8);
#endif
}

inline void store8(float* p, f32x8 v) { std::memcpy(p, &v, sizeof v); }
#if defined(__AVX2__)
// v rounded to bf16 (nearest even: add 0x7FFF plus the lowest kept bit; NaN -> quiet NaN), in the high half of
// each 32-bit lane; the low half is garbage.
inline __m256i bf16_in_high_half(f32x8 v) {
  const u32x8 u = bitcast<u32x8>(v);
  const u32x8 rounded = u + 0x7FFFu + ((u >> 16) & 1u);
  return _mm256_castps_si256(_mm256_blendv_ps(bitcast<__m256>(rounded), bitcast<__m256>(u | 0x400000u),
                                              _mm256_cmp_ps(bitcast<__m256>(v), bitcast<__m256>(v), _CMP_UNORD_Q)));
}
// bf16_in_high_half for a v without NaNs (a NaN could round to an infinity or flip its sign): four instructions
// instead of seven.
inline __m256i bf16_in_high_half_no_nan(f32x8 v) {
  const u32x8 u = bitcast<u32x8>(v);
  return bitcast<__m256i>(u + 0x7FFFu + ((u >> 16) & 1u));
}
#endif
#if defined(__AVX512BF16__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define SGL_NPU_BF16_CONVERT_INSN 1
// The hardware fp32 -> bf16 conversion rounds to nearest even and quiets NaNs exactly as the rounding above, but
// flushes denormal inputs to zero: vectors holding one (fpclass bit 0x20) take the software rounding instead.
inline bool no_denormal(f32x8 v) { return _mm256_fpclass_ps_mask(bitcast<__m256>(v), 0x20) == 0; }
inline bool no_denormal(f32x8 a, f32x8 b) {  // one mask test, no move to a general register
  return _kortestz_mask8_u8(_mm256_fpclass_ps_mask(bitcast<__m256>(a), 0x20),
                            _mm256_fpclass_ps_mask(bitcast<__m256>(b), 0x20));
}
inline __m128i bf16_convert_insn(f32x8 v) { return bitcast<__m128i>(_mm256_cvtneps_pbh(bitcast<__m256>(v))); }
#endif
inline void store8(bf16_t* p, f32x8 v) {
#if defined(SGL_NPU_BF16_CONVERT_INSN)
  if (__builtin_expect(no_denormal(v), 1)) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), bf16_convert_insn(v));
    return;
  }
#endif
#if defined(__AVX2__)
  const __m256i r = _mm256_srli_epi32(bf16_in_high_half(v), 16);
  // Every lane is <= 0xFFFF, so the saturating pack is a plain narrowing.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
#else
  // Round to nearest even: add 0x7FFF plus the lowest kept bit, keep the high half; NaN -> quiet NaN.
  const u32x8 u = bitcast<u32x8>(v);
  const u32x8 high = u >> 16;
  const u32x8 rounded = (u + 0x7FFFu + (high & 1u)) >> 16;
  const u32x8 quiet_nan = high | 0x40u;
  const u32x8 is_nan = (u32x8)(v != v);
  u16x8 h = __builtin_convertvector((rounded & ~is_nan) | (quiet_nan & is_nan), u16x8);
  std::memcpy(p, &h, sizeof h);
#endif
}
inline void store8(fp16_t* p, f32x8 v) {
#if defined(__F16C__)
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                   _mm256_cvtps_ph(bitcast<__m256>(v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  h16x8 h = __builtin_convertvector(v, h16x8);
  std::memcpy(p, &h, sizeof h);
#endif
}

// v rounded to T's precision, kept in fp32: what storing to T and loading back gives, without the memory trip.
template <class T>
inline f32x8 round_to(f32x8 v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else if constexpr (std::is_same_v<T, bf16_t>) {
#if defined(SGL_NPU_BF16_CONVERT_INSN)
    if (__builtin_expect(no_denormal(v), 1))
      return bitcast<f32x8>(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bf16_convert_insn(v)), 16));
#endif
#if defined(__AVX2__)
    return bitcast<f32x8>(_mm256_and_si256(bf16_in_high_half(v), _mm256_set1_epi32(int(0xFFFF0000u))));
#else
    const u32x8 u = bitcast<u32x8>(v);
    const u32x8 rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    const u32x8 is_nan = (u32x8)(v != v);
    return bitcast<f32x8>((rounded & ~is_nan) | ((u | 0x400000u) & 0xFFFF0000u & is_nan));
#endif
  } else {
#if defined(__F16C__)
    return bitcast<f32x8>(_mm256_cvtph_ps(_mm256_cvtps_ph(bitcast<__m256>(v), _MM_FROUND_TO_NEAREST_INT)));
#else
    T tmp[kVec];
    store8(tmp, v);
    return load8(tmp);
#endif
  }
}

// Store that bypasses the cache (no read-for-ownership of the destination line) for outputs much larger
// than the cache. `p` must be 16-byte aligned; call stream_fence() before the data is read elsewhere.
template <class T>
inline void store8_stream(T* p, f32x8 v) {
#if defined(__SSE2__)
  alignas(32) T tmp[kVec];
  store8(tmp, v);
  for (unsigned k = 0; k < sizeof tmp; k += 16)
    _mm_stream_si128(reinterpret_cast<__m128i*>(reinterpret_cast<char*>(p) + k),
                     _mm_load_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const char*>(tmp) + k)));
#else
  store8(p, v);
#endif
}
// Data of this size and more is far from cache-resident: such outputs are written around the caches.
constexpr int64_t kStreamMinBytes = 8 << 20;
// Whether rows of `row_bytes` (`stride_bytes` apart) at `out` should be written with store8_stream: the
// output is far larger than the caches and every 8-element store lands 16-byte aligned.
inline bool should_stream(const void* out, int64_t rows, int64_t row_bytes, int64_t stride_bytes) {
  return rows * row_bytes >= kStreamMinBytes && reinterpret_cast<uintptr_t>(out) % 16 == 0 && stride_bytes % 16 == 0;
}
// Asks for [p, p + bytes) to be brought into the caches ahead of its use, one request per 64-byte line: for rows
// read a stride apart, where the hardware prefetcher restarts at every 4 KB page. kLocality 3 (prefetcht0) fills L1,
// for data used within a few hundred cycles; 2 (prefetcht1) stops at L2, for data asked for microseconds ahead, which
// in L1 would evict what is in use first (decode attention asking for the next block of keys: 1.45x faster with 2).
// The empty volatile asm is a side effect: without it GCC 12 finds a function that only prefetches "looping const"
// and, loops being finite in C++, deletes calls to any such function it did not inline early (the attention kernel's
// NextRows::ask: no prefetch instruction was left in its object file).
template <int kLocality = 3>
inline void prefetch_bytes(const void* p, int64_t bytes) {
  const char* c = static_cast<const char*>(p);
  for (int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(c + b, 0, kLocality);
  __asm__ __volatile__("");
}
// memcpy with non-temporal stores where `dst` is 16-byte aligned and `bytes` a multiple of 16 (else memcpy); with
// AVX-512, one load and one store per 64-byte line where `dst` is 64-byte aligned and `bytes` a multiple of 64.
inline void copy_stream(void* dst, const void* src, int64_t bytes) {
#if defined(__AVX512F__)
  if (reinterpret_cast<uintptr_t>(dst) % 64 == 0 && bytes % 64 == 0) {
    auto* d = static_cast<__m512i*>(dst);
    const char* s = static_cast<const char*>(src);
    for (int64_t i = 0; i < bytes / 64; ++i) _mm512_stream_si512(d + i, _mm512_loadu_si512(s + 64 * i));
    return;
  }
#endif
#if defined(__SSE2__)
  if (reinterpret_cast<uintptr_t>(dst) % 16 == 0 && bytes % 16 == 0) {
    auto* d = static_cast<__m128i*>(dst);
    const auto* s = static_cast<const __m128i*>(src);
    for (int64_t i = 0; i < bytes / 16; ++i) _mm_stream_si128(d + i, _mm_loadu_si128(s + i));
    return;
  }
#endif
  std::memcpy(dst, src, size_t(bytes));
}
inline void stream_fence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

inline float reduce_add(f32x8 v) {
  float s = 0.f;
  for (int i = 0; i < kVec; ++i) s += v[i];
  return s;
}
// The lane sums of v[0, 8) as one vector (lane i: the sum of v[i]).
inline f32x8 reduce_add8(const f32x8* v) {
#if defined(__AVX__)
  auto m = [](f32x8 x) { return bitcast<__m256>(x); };
  const __m256 e = _mm256_hadd_ps(_mm256_hadd_ps(m(v[0]), m(v[1])), _mm256_hadd_ps(m(v[2]), m(v[3])));
  const __m256 f = _mm256_hadd_ps(_mm256_hadd_ps(m(v[4]), m(v[5])), _mm256_hadd_ps(m(v[6]), m(v[7])));
  return bitcast<f32x8>(_mm256_add_ps(_mm256_permute2f128_ps(e, f, 0x20), _mm256_permute2f128_ps(e, f, 0x31)));
#else
  f32x8 r;
  for (int i = 0; i < kVec; ++i) r[i] = reduce_add(v[i]);
  return r;
#endif
}
// Correctly rounded square root, lane by lane.
inline f32x8 vsqrt(f32x8 v) {
#if defined(__AVX__)
  return bitcast<f32x8>(_mm256_sqrt_ps(bitcast<__m256>(v)));
#else
  for (int i = 0; i < kVec; ++i) v[i] = std::sqrt(v[i]);
  return v;
#endif
}
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
// acc + the products of 16 bf16 values of a and b, added in pairs (one vdpbf16ps): bf16 products are exact in fp32,
// so this is a dot product without widening either side. Denormal inputs count as zero.
#define SGL_NPU_BF16_DOT 1
constexpr bool kBf16Dot = true;
inline f32x8 dot_pairs(f32x8 acc, const bf16_t* a, const bf16_t* b) {
  return bitcast<f32x8>(_mm256_dpbf16_ps(bitcast<__m256>(acc), bitcast<__m256bh>(_mm256_loadu_si256((const __m256i*)a)),
                                         bitcast<__m256bh>(_mm256_loadu_si256((const __m256i*)b))));
}
#else
constexpr bool kBf16Dot = false;
#endif
inline float reduce_max(f32x8 v) {
  float m = v[0];
  for (int i = 1; i < kVec; ++i) m = v[i] > m ? v[i] : m;
  return m;
}
// max/min return b where either is NaN (one instruction each; the generic selects do the same).
#if defined(__AVX__)
inline f32x8 vmax(f32x8 a, f32x8 b) { return bitcast<f32x8>(_mm256_max_ps(bitcast<__m256>(a), bitcast<__m256>(b))); }
inline f32x8 vmin(f32x8 a, f32x8 b) { return bitcast<f32x8>(_mm256_min_ps(bitcast<__m256>(a), bitcast<__m256>(b))); }
#else
inline f32x8 vmax(f32x8 a, f32x8 b) { return a > b ? a : b; }
inline f32x8 vmin(f32x8 a, f32x8 b) { return a < b ? a : b; }
#endif
inline f32x8 vabs(f32x8 a) { return bitcast<f32x8>(bitcast<u32x8>(a) & 0x7FFFFFFFu); }
inline f32x8 vclamp(f32x8 a, float lo, float hi) { return vmin(vmax(a, splat(lo)), splat(hi)); }
// min(a, hi) and clamp(a, lo, hi) that keep a NaN a NaN, as torch.clamp does (vclamp gives lo): the bound goes
// first, since min / max return their second operand where either is NaN.
inline f32x8 vmin_keep_nan(f32x8 a, float hi) { return vmin(splat(hi), a); }
inline f32x8 vclamp_keep_nan(f32x8 a, float lo, float hi) { return vmin(splat(hi), vmax(splat(lo), a)); }
// |a|'s bits: as unsigned integers they order like the values, with every NaN above +inf, so an integer max of
// them keeps a NaN (a float max drops one that an earlier lane or step saw).
inline u32x8 vabs_bits(f32x8 a) { return bitcast<u32x8>(a) & 0x7FFFFFFFu; }
inline u32x8 vmax_bits(u32x8 a, u32x8 b) { return a > b ? a : b; }
inline uint32_t abs_bits(float a) { return bitcast<uint32_t>(a) & 0x7FFFFFFFu; }
template <class U>
inline uint32_t reduce_max_bits(U m) {
  uint32_t r = m[0];
  for (int i = 1; i < int(sizeof(U) / sizeof(uint32_t)); ++i) r = m[i] > r ? m[i] : r;
  return r;
}
// 16-wide fp32 (zmm) where AVX-512 is built: the activations and bf16 RMSNorm run their blocks of 32 values on two
// of these (see f32xW). Only the operations those need.
#if defined(__AVX512F__) && defined(__AVX512VL__)
#define SGL_NPU_HAVE_F32X16 1
typedef float f32x16 __attribute__((vector_size(64)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
inline f32x16 vmax(f32x16 a, f32x16 b) {
  return bitcast<f32x16>(_mm512_max_ps(bitcast<__m512>(a), bitcast<__m512>(b)));
}
inline f32x16 vmin(f32x16 a, f32x16 b) {
  return bitcast<f32x16>(_mm512_min_ps(bitcast<__m512>(a), bitcast<__m512>(b)));
}
inline f32x16 vclamp(f32x16 a, float lo, float hi) { return vmin(vmax(a, f32x16{} + lo), f32x16{} + hi); }
inline f32x16 vmin_keep_nan(f32x16 a, float hi) { return vmin(f32x16{} + hi, a); }
inline f32x16 vclamp_keep_nan(f32x16 a, float lo, float hi) { return vmin(f32x16{} + hi, vmax(f32x16{} + lo, a)); }
inline u32x16 vabs_bits(f32x16 a) { return bitcast<u32x16>(a) & 0x7FFFFFFFu; }
inline u32x16 vmax_bits(u32x16 a, u32x16 b) { return a > b ? a : b; }
// The lanes [8h, 8h + 8) of a.
template <int h>
inline f32x8 half8(f32x16 a) {
  if constexpr (h == 0)
    return __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7);
  else
    return __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
}
inline float reduce_add(f32x16 v) { return reduce_add(half8<0>(v) + half8<1>(v)); }
// t - round(t) (AVX512DQ's vreduceps, nearest even) and a * 2^floor(b) (vscalefps), for exp's argument reduction.
#if defined(__AVX512DQ__)
#define SGL_NPU_HAVE_REDUCE_SCALEF 1
constexpr int kReduceToInteger = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
inline f32x8 vreduce(f32x8 t) { return bitcast<f32x8>(_mm256_reduce_ps(bitcast<__m256>(t), kReduceToInteger)); }
inline f32x16 vreduce(f32x16 t) { return bitcast<f32x16>(_mm512_reduce_ps(bitcast<__m512>(t), kReduceToInteger)); }
inline f32x8 vscalef(f32x8 a, f32x8 b) {
  return bitcast<f32x8>(_mm256_scalef_ps(bitcast<__m256>(a), bitcast<__m256>(b)));
}
inline f32x16 vscalef(f32x16 a, f32x16 b) {
  return bitcast<f32x16>(_mm512_scalef_ps(bitcast<__m512>(a), bitcast<__m512>(b)));
}
#endif
#endif
// The unsigned integer vector of V's width (exp builds 2^n in it).
template <class V>
struct UintVec {
  using type = u32x8;
};
#if defined(SGL_NPU_HAVE_F32X16)
template <>
struct UintVec<f32x16> {
  using type = u32x16;
};
#endif

// floor for |a| < 2^31 (generic: truncate, then step down where truncation went up).
inline f32x8 vfloor(f32x8 a) {
#if defined(__AVX__)
  return bitcast<f32x8>(_mm256_floor_ps(bitcast<__m256>(a)));
#else
  f32x8 t = __builtin_convertvector(__builtin_convertvector(a, i32x8), f32x8);
  return t - bitcast<f32x8>((t > a) & bitcast<i32x8>(splat(1.0f)));
#endif
}
// Rounds half to even. Unlike vround_even_small, a product passed in cannot be fused with the rounding into one
// FMA (which would round the exact product instead of the fp32 one a reference computes first).
inline f32x8 vrint(f32x8 a) {
#if defined(__AVX__)
  return bitcast<f32x8>(_mm256_round_ps(bitcast<__m256>(a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
  for (int i = 0; i < kVec; ++i) a[i] = __builtin_nearbyintf(a[i]);
  return a;
#endif
}
// Rounds half to even for |a| < 2^22 (adding and removing 1.5 * 2^23 drops the fraction bits).
inline f32x8 vround_even_small(f32x8 a) { return (a + 12582912.0f) - 12582912.0f; }
// Saturating fp32 -> int8 of 8 values that are already integral (NaN -> -128).
inline void store8_int8(int8_t* p, f32x8 v) {
  v = vclamp(v, -128.f, 127.f);
#if defined(__AVX2__)  // GCC scalarizes the generic narrowing into eight byte stores
  const __m256i i = _mm256_cvtps_epi32(bitcast<__m256>(v));
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packs_epi16(w, w));
#else
  typedef int8_t i8x8 __attribute__((vector_size(8)));
  i8x8 q = __builtin_convertvector(__builtin_convertvector(v, i32x8), i8x8);
  std::memcpy(p, &q, sizeof q);
#endif
}
#if defined(__SSE2__)
// 16 bytes to p, around the caches when `stream` (p 16-byte aligned; see store8_stream).
inline void store_bytes16(void* p, __m128i v, bool stream) {
  if (stream)
    _mm_stream_si128(static_cast<__m128i*>(p), v);
  else
    _mm_storeu_si128(static_cast<__m128i*>(p), v);
}
#endif
// rint(v) saturated to int8 for 16 values (lo then hi), NaN -> -128: the conversion rounds half to even (the
// default MXCSR mode) and the two packs saturate, so no separate rounding or clamping is needed. The int8 stores
// below take `stream` as store16 does (p 16-byte aligned); where AVX2 is not built they ignore it.
inline void store16_int8_rint(int8_t* p, f32x8 lo, f32x8 hi, bool stream = false) {
#if defined(__AVX2__)
  const __m256i a = _mm256_cvtps_epi32(bitcast<__m256>(lo)), b = _mm256_cvtps_epi32(bitcast<__m256>(hi));
  const __m256i w = _mm256_packs_epi32(a, b);  // per 128-bit lane: a0..3 b0..3 | a4..7 b4..7
  const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  // bytes: a0..3 b0..3 a4..7 b4..7 -> a0..7 b0..7
  store_bytes16(p, _mm_shuffle_epi32(bytes, _MM_SHUFFLE(3, 1, 2, 0)), stream);
#else
  (void)stream;
  store8_int8(p, vrint(lo));
  store8_int8(p + kVec, vrint(hi));
#endif
}
inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// How accurate vexp_n and the functions built on it are, named by the results they serve. kFp32: ~1.5e-7 relative (a
// degree-5 polynomial and f corrected for log2 e's rounding). kFp16: ~2.6e-6 (degree 4, a minimax fit, no
// correction), 0.005 of an fp16 rounding step, and 3e-4 of an int8 code's step at a row's largest value (swiglu_quant
// codes). kBf16: ~8e-5 (degree 3, a least-squares fit), 0.04 of a bf16 rounding step. Fits of 2^f on [-1/2, 1/2].
// Where f comes from x log2 e rounded (vreduce, below) it carries that rounding too: ~4e-6 for kFp16 at |x| <= 30.
enum class Accuracy { kFp32, kFp16, kBf16 };

// exp of N vectors in place: exp(x) = 2^n * 2^f, n = round(x log2 e), f = x log2 e - n in [-1/2, 1/2], 2^f by a
// polynomial (see Accuracy); saturating outside [-87, 88]. n is rounded with the 1.5 * 2^23 trick, which also leaves
// n in the low bits for building 2^n. With AVX-512, the reduced tiers for callers that divide by the result
// (kInfAbove) take f = vreduce(t) and n = t - f of t = x log2 e, and 2^n * p by vscalef: no clamp (vscalef gives
// inf, 0 or a denormal itself), three instructions for seven (silu_and_mul 1.05-1.07x, swiglu_quant 1.03-1.04x,
// swiglu_oai fp16 1.11x, alternated in one process; vscalef in place of the integer 2^n alone had measured 0.91-0.98x).
// Each step is taken for all N vectors before the next, so the instruction stream holds N independent chains side by
// side: one vector's ~15-deep chain leaves the out-of-order window mostly waiting (silu_and_mul with N = 4 runs
// 1.2-1.33x faster than one vector at a time, 2026-11-27). GCC unrolls the constant-count loops over k.
// kInfAbove: +inf from x >= ~88.4 (n = 128 builds 2^n = inf) instead of saturating at ~2.4e38, for callers that
// divide by the result. kOfNegated: exp(-v), the sign carried by the constants instead of one negation per vector
// (swiglu_quant 1.02x; bit-identical for every non-NaN v, and a NaN v gives +inf where exp(-NaN) gave ~1e-38: a
// caller dividing v by the result keeps its NaN). V: f32x8 or f32x16.
template <int N, Accuracy kAccuracy = Accuracy::kFp32, bool kInfAbove = false, bool kOfNegated = false, class V>
SGL_NPU_INLINE void vexp_n(V* v) {
  using U = typename UintVec<V>::type;
  constexpr float kSign = kOfNegated ? -1.0f : 1.0f, kLo = -87.33654f, kHi = kInfAbove ? 89.0f : 88.37626f;
  constexpr float kLog2e = kSign * 1.44269502162933349609375f;
  V shifted[N], f[N], p[N];
#if defined(SGL_NPU_HAVE_REDUCE_SCALEF)
  constexpr bool kReduce = kAccuracy != Accuracy::kFp32 && kInfAbove;
#else
  constexpr bool kReduce = false;
#endif
  if constexpr (kReduce) {  // shifted: n itself
    for (int k = 0; k < N; ++k) v[k] = v[k] * kLog2e;
    for (int k = 0; k < N; ++k) f[k] = vreduce(v[k]);
    for (int k = 0; k < N; ++k) shifted[k] = v[k] - f[k];
  } else {
    for (int k = 0; k < N; ++k) v[k] = kOfNegated ? vclamp(v[k], -kHi, -kLo) : vclamp(v[k], kLo, kHi);
    for (int k = 0; k < N; ++k) shifted[k] = v[k] * kLog2e + 12582912.0f;
    for (int k = 0; k < N; ++k) f[k] = v[k] * kLog2e - (shifted[k] - 12582912.0f);
  }
  if constexpr (kAccuracy == Accuracy::kBf16) {
    for (int k = 0; k < N; ++k) p[k] = f[k] * 0.05508868380751114f + 0.24260405145947936f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 0.6932762416819607f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 0.9999289403695112f;
  } else if constexpr (kAccuracy == Accuracy::kFp16) {
    for (int k = 0; k < N; ++k) p[k] = f[k] * 0.009570068679749966f + 0.055917806923389435f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 0.240247443318367f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 0.6931218504905701f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 0.9999992847442627f;
  } else {
    for (int k = 0; k < N; ++k) f[k] = v[k] * (kSign * 1.925963033500011079e-8f) + f[k];  // log2 e - its fp32 value
    for (int k = 0; k < N; ++k) p[k] = f[k] * 1.3266970636323094e-3f + 9.675459936261177e-3f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 5.550742521882057e-2f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 2.4022121727466583e-1f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 6.931469440460205e-1f;
    for (int k = 0; k < N; ++k) p[k] = p[k] * f[k] + 1.0f;
  }
  if constexpr (kReduce) {
    for (int k = 0; k < N; ++k) v[k] = vscalef(p[k], shifted[k]);
  } else {
    for (int k = 0; k < N; ++k) v[k] = p[k] * bitcast<V>((bitcast<U>(shifted[k]) << 23) + (127u << 23));
  }
}
SGL_NPU_INLINE f32x8 vexp(f32x8 x) {
  vexp_n<1>(&x);
  return x;
}
// x * sigmoid(x) of N vectors in place, as x / (1 + exp(-x)): one correctly rounded division, which runs beside the
// FMA pipes. It beat the reciprocal estimate and its Newton step by 1.05-1.15x (swiglu_quant 4096 x 7168, silu_and_mul
// fp16 / fp32), and AVX-512's 14-bit estimate alone by 1.05x (silu_and_mul bf16, 2026-11-28); alternated in one
// process. exp(-x) = inf below x ~ -88.4: x / inf = -0, and -inf / inf = NaN as torch's.
template <int N, Accuracy kAccuracy = Accuracy::kFp32, class V>
SGL_NPU_INLINE void vsilu_n(V* v) {
  V e[N];
  for (int k = 0; k < N; ++k) e[k] = v[k];
  vexp_n<N, kAccuracy, true, true>(e);
  for (int k = 0; k < N; ++k) v[k] = v[k] / (1.0f + e[k]);
}

// ---- sixteen values at a time -------------------------------------------------------------------------------
// load16<T> gives 16 values of T as two fp32 vectors in an order elementwise code need not know: for bf16 on AVX2
// the even- and the odd-indexed values (one 32-byte load and two instructions, against four for memory order),
// otherwise memory order. store16<T> and store16_int8_rint<T> put each value back where load16<T> took it from.
// Per-channel parameters must come in the same order (permute16<T> arranges an fp32 array so).
struct f32x8x2 {
  f32x8 lo, hi;
};
template <class T>
inline constexpr bool kSplitsPairs =
#if defined(__AVX2__)
    std::is_same_v<T, bf16_t>;
#else
    false;
#endif

template <class T>
inline f32x8x2 load16(const T* p) {
#if defined(__AVX2__)
  if constexpr (kSplitsPairs<T>) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return {bitcast<f32x8>(_mm256_slli_epi32(v, 16)),
            bitcast<f32x8>(_mm256_and_si256(v, _mm256_set1_epi32(int(0xFFFF0000u))))};
  }
#endif
  return {load8(p), load8(p + kVec)};
}
// 16 values of T at p split into the even- and the odd-indexed ones (pairs such as gate / up come apart; also
// load16<bf16_t>'s order for values of another type).
template <class T>
inline f32x8x2 load16_evens_odds(const T* p) {
  if constexpr (kSplitsPairs<T>) return load16(p);  // the load itself splits them
  const f32x8 lo = load8(p), hi = load8(p + kVec);
  return {__builtin_shufflevector(lo, hi, 0, 2, 4, 6, 8, 10, 12, 14),
          __builtin_shufflevector(lo, hi, 1, 3, 5, 7, 9, 11, 13, 15)};
}
#if defined(SGL_NPU_BF16_CONVERT_INSN)
// 16 values in load16<bf16_t>'s order as bf16 in memory order, by the conversion instruction (no denormals).
inline __m256i bf16_pack16_insn(f32x8x2 v) {
  // evens 0..7 then odds 0..7, interleaved back to memory order by one word permute
  const __m256i halves = bitcast<__m256i>(_mm256_cvtne2ps_pbh(bitcast<__m256>(v.hi), bitcast<__m256>(v.lo)));
  return _mm256_permutexvar_epi16(_mm256_setr_epi16(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), halves);
}
#endif
// Non-temporal when `stream` (p 16-byte aligned; see store8_stream).
template <class T>
SGL_NPU_INLINE void store16(T* p, f32x8x2 v, bool stream = false) {
#if defined(__AVX2__)
  if constexpr (kSplitsPairs<T>) {
    // One test for NaNs among all 16 values (unordered compare of the two halves) keeps the common case at the
    // short rounding.
    __m256i both;
#if defined(SGL_NPU_BF16_CONVERT_INSN)
    if (__builtin_expect(no_denormal(v.lo, v.hi), 1)) {
      both = bf16_pack16_insn(v);
    } else
#endif
    {
      __m256i even, odd;
      const __m256 any_nan = _mm256_cmp_ps(bitcast<__m256>(v.lo), bitcast<__m256>(v.hi), _CMP_UNORD_Q);
      if (__builtin_expect(_mm256_movemask_ps(any_nan) != 0, 0)) {
        even = bf16_in_high_half(v.lo);
        odd = bf16_in_high_half(v.hi);
      } else {
        even = bf16_in_high_half_no_nan(v.lo);
        odd = bf16_in_high_half_no_nan(v.hi);
      }
      both = _mm256_blend_epi16(_mm256_srli_epi32(even, 16), odd, 0xAA);
    }
    if (stream) {
      _mm_stream_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(both));
      _mm_stream_si128(reinterpret_cast<__m128i*>(p) + 1, _mm256_extracti128_si256(both, 1));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), both);
    }
    return;
  }
#endif
  if (stream) {
    store8_stream(p, v.lo);
    store8_stream(p + kVec, v.hi);
  } else {
    store8(p, v.lo);
    store8(p + kVec, v.hi);
  }
}
// round_to<T> of 16 values in load16<T>'s order: for bf16, one conversion and one permute for both halves.
template <class T>
SGL_NPU_INLINE f32x8x2 round16_to(f32x8x2 v) {
#if defined(SGL_NPU_BF16_CONVERT_INSN)
  if constexpr (kSplitsPairs<T>) {
    if (__builtin_expect(no_denormal(v.lo, v.hi), 1)) {
      const __m256i both = bf16_pack16_insn(v);
      return {bitcast<f32x8>(_mm256_slli_epi32(both, 16)),
              bitcast<f32x8>(_mm256_and_si256(both, _mm256_set1_epi32(int(0xFFFF0000u))))};
    }
  }
#endif
  return {round_to<T>(v.lo), round_to<T>(v.hi)};
}
template <class T>
inline void store16_int8_rint(int8_t* p, f32x8x2 v, bool stream = false) {
#if defined(__AVX2__)
  if constexpr (kSplitsPairs<T>) {
    const __m256i even = _mm256_cvtps_epi32(bitcast<__m256>(v.lo)), odd = _mm256_cvtps_epi32(bitcast<__m256>(v.hi));
    // Interleaved back to memory order (0..3 | 8..11 and 4..7 | 12..15 per lane), then narrowed as usual.
    const __m256i w = _mm256_packs_epi32(_mm256_unpacklo_epi32(even, odd), _mm256_unpackhi_epi32(even, odd));
    store_bytes16(p, _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1)), stream);
    return;
  }
#endif
  store16_int8_rint(p, v.lo, v.hi, stream);
}
// floor(v) saturated to int8 for 16 values in load16<T>'s order (NaN -> -128), stored in memory order.
template <class T>
inline void store16_int8_floor(int8_t* p, f32x8x2 v, bool stream = false) {
#if defined(__AVX512F__) && defined(__AVX512DQ__)
  // One conversion that rounds down (embedded rounding, zmm only) and one saturating narrowing, against a floor, a
  // clamp and the packs per half (swiglu_quant 4096 x 7168: 1.04-1.08x).
  __m512 x = _mm512_insertf32x8(_mm512_castps256_ps512(bitcast<__m256>(v.lo)), bitcast<__m256>(v.hi), 1);
  x = _mm512_min_ps(_mm512_set1_ps(128.f), x);  // +inf saturates up; a NaN stays one (min returns its 2nd operand)
  __m512i c = _mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // NaN, -inf: INT_MIN
  if constexpr (kSplitsPairs<T>)  // evens 0..7 then odds 0..7 -> memory order
    c = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15), c);
  store_bytes16(p, _mm512_cvtsepi32_epi8(c), stream);
#else
  store16_int8_rint<T>(p, {vfloor(vclamp(v.lo, -129.f, 128.f)), vfloor(vclamp(v.hi, -129.f, 128.f))}, stream);
#endif
}
// v[0, n16) rearranged in place into load16<T>'s order, block of 16 by block (n16 = n rounded down to 16); the
// tail stays as it is. Nothing to do where load16<T> keeps memory order.
template <class T>
inline void permute16(float* v, int64_t n) {
  if constexpr (kSplitsPairs<T>) {
    for (int64_t i = 0; i + 2 * kVec <= n; i += 2 * kVec) {
      float block[2 * kVec];
      for (int k = 0; k < kVec; ++k) {
        block[k] = v[i + 2 * k];
        block[kVec + k] = v[i + 2 * k + 1];
      }
      std::memcpy(v + i, block, sizeof block);
    }
  }
}

// ---- thirty-two values at a time ----------------------------------------------------------------------------
// Blocks of 32 values as 32 / kLanes<V> vectors V: f32x8, or f32x16 where AVX-512 is built (f32xW, the widest).
// The exp-heavy activations take theirs on f32xW: their exp chains are long, and the out-of-order window holds as
// many instructions either way, so with 16 lanes each it holds twice the work (see docs/design.md).
// load32<T>(p, v) holds p[0, 32) in an order elementwise code need not know; half16<T, h>(v) gives p[16h, 16h + 16)
// in load16<T>'s order, for the sixteen-value stores (from_halves is its inverse); store32<T> puts all 32 back.
#if defined(SGL_NPU_HAVE_F32X16)
using f32xW = f32x16;
inline f32x16 load16_wide(const float* p) {
  f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline f32x16 load16_wide(const fp16_t* p) {
  return bitcast<f32x16>(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
}
#else
using f32xW = f32x8;
#endif
template <class V>
inline constexpr int kLanes = int(sizeof(V) / sizeof(float));
constexpr int kW32 = 32 / kLanes<f32xW>;

template <class T, class V>
inline void load32(const T* p, V* v) {
  if constexpr (std::is_same_v<V, f32x8>) {
    for (int h = 0; h < 2; ++h) {
      const f32x8x2 b = load16(p + 16 * h);
      v[2 * h] = b.lo;
      v[2 * h + 1] = b.hi;
    }
#if defined(SGL_NPU_HAVE_F32X16)
  } else if constexpr (kSplitsPairs<T>) {  // the even- and the odd-indexed values of all 32, as load16 splits 16
    const __m512i w = _mm512_loadu_si512(p);
    v[0] = bitcast<f32x16>(_mm512_slli_epi32(w, 16));
    v[1] = bitcast<f32x16>(_mm512_and_si512(w, _mm512_set1_epi32(int(0xFFFF0000u))));
  } else {
    v[0] = load16_wide(p);
    v[1] = load16_wide(p + 16);
#endif
  }
}
template <class T, int h, class V>
inline f32x8x2 half16(const V* v) {
  if constexpr (std::is_same_v<V, f32x8>) {
    return {v[2 * h], v[2 * h + 1]};
#if defined(SGL_NPU_HAVE_F32X16)
  } else if constexpr (kSplitsPairs<T>) {
    return {half8<h>(v[0]), half8<h>(v[1])};
  } else {
    return {half8<0>(v[h]), half8<1>(v[h])};
#endif
  }
}
template <class T, class V>
inline void from_halves(f32x8x2 h0, f32x8x2 h1, V* v) {
  if constexpr (std::is_same_v<V, f32x8>) {
    v[0] = h0.lo, v[1] = h0.hi, v[2] = h1.lo, v[3] = h1.hi;
#if defined(SGL_NPU_HAVE_F32X16)
  } else {
    auto join = [](f32x8 lo, f32x8 hi) {
      return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    };
    if constexpr (kSplitsPairs<T>) {
      v[0] = join(h0.lo, h1.lo);
      v[1] = join(h0.hi, h1.hi);
    } else {
      v[0] = join(h0.lo, h0.hi);
      v[1] = join(h1.lo, h1.hi);
    }
#endif
  }
}
#if defined(SGL_NPU_HAVE_F32X16) && defined(SGL_NPU_BF16_CONVERT_INSN)
inline bool no_denormal(f32x16 a, f32x16 b) {
  return _kortestz_mask16_u8(_mm512_fpclass_ps_mask(bitcast<__m512>(a), 0x20),
                             _mm512_fpclass_ps_mask(bitcast<__m512>(b), 0x20));
}
// 32 values in load32<bf16_t>'s order (evens, odds) as bf16 in memory order, by the conversion instruction (no
// denormals): 32-bit lane i holds values 2i (low half) and 2i + 1.
inline __m512i bf16_pack32_insn(const f32x16* v) {
  const __m512i halves = bitcast<__m512i>(_mm512_cvtne2ps_pbh(bitcast<__m512>(v[1]), bitcast<__m512>(v[0])));
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                         5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, halves);
}
#endif
// round32_to's way for vectors holding a denormal (or without the conversion instruction): by sixteen. Out of line:
// the cold path stays out of the callers' loops.
template <class T, class V>
[[gnu::noinline]] void round32_to_by16(V* v) {
  from_halves<T>(round16_to<T>(half16<T, 0>(v)), round16_to<T>(half16<T, 1>(v)), v);
}
// round_to<T> of 32 values in load32<T>'s order, in place (see round16_to).
template <class T, class V>
SGL_NPU_INLINE void round32_to(V* v) {
  if constexpr (std::is_same_v<T, float>) return;
#if defined(SGL_NPU_HAVE_F32X16) && defined(SGL_NPU_BF16_CONVERT_INSN)
  if constexpr (std::is_same_v<V, f32x16> && kSplitsPairs<T>) {
    if (__builtin_expect(no_denormal(v[0], v[1]), 1)) {
      const __m512i both = bf16_pack32_insn(v);
      v[0] = bitcast<f32x16>(_mm512_slli_epi32(both, 16));
      v[1] = bitcast<f32x16>(_mm512_and_si512(both, _mm512_set1_epi32(int(0xFFFF0000u))));
      return;
    }
  }
#endif
  V copy[32 / kLanes<V>];  // the call takes a copy: v's own address would keep v in memory in the caller
  std::memcpy(copy, v, sizeof copy);
  round32_to_by16<T>(copy);
  std::memcpy(v, copy, sizeof copy);
}
template <class T, class V>
SGL_NPU_INLINE void store32(T* p, const V* v, bool stream = false) {
#if defined(SGL_NPU_HAVE_F32X16)
  // All 32 at once: cached, or streamed (one 64-byte line at a time) where p is 64-byte aligned; other streamed ones
  // go by sixteen. Streaming by whole lines: silu_and_mul 4096 x 7168 bf16 1.10x, fp16 1.17x, fp32 1.01x (alternated
  // in one process).
  if constexpr (std::is_same_v<V, f32x16>) {
    if (!stream || (reinterpret_cast<uintptr_t>(p) % 64 == 0)) {
      auto put = [stream](void* at, __m512i line) {  // one 64-byte line
        stream ? _mm512_stream_si512(static_cast<__m512i*>(at), line) : _mm512_storeu_si512(at, line);
      };
      if constexpr (std::is_same_v<T, float>) {
        put(p, bitcast<__m512i>(v[0]));
        put(p + 16, bitcast<__m512i>(v[1]));
        return;
      } else if constexpr (std::is_same_v<T, fp16_t>) {
        constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        put(p, _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtps_ph(bitcast<__m512>(v[0]), kRound)),
                                  _mm512_cvtps_ph(bitcast<__m512>(v[1]), kRound), 1));
        return;
      }
#if defined(SGL_NPU_BF16_CONVERT_INSN)
      if constexpr (kSplitsPairs<T>) {
        if (__builtin_expect(no_denormal(v[0], v[1]), 1)) {  // see no_denormal: the conversion flushes denormals
          put(p, bf16_pack32_insn(v));
          return;
        }
      }
#endif
    }
  }
#endif
  store16(p, half16<T, 0>(v), stream);
  store16(p + 16, half16<T, 1>(v), stream);
}

// floor(v) saturated to int8 for 32 values in load32<T>'s order (NaN -> -128), stored in memory order: on f32x16,
// two rounding-down conversions and narrowings, where the 16-value stores first reassemble each half into one
// vector (swiglu_quant's second pass).
template <class T, class V>
SGL_NPU_INLINE void store32_int8_floor(int8_t* p, const V* v, bool stream = false) {
#if defined(SGL_NPU_HAVE_F32X16)
  if constexpr (std::is_same_v<V, f32x16>) {
    __m128i codes[2];
    for (int k = 0; k < 2; ++k) {
      const __m512 x = _mm512_min_ps(_mm512_set1_ps(128.f), bitcast<__m512>(v[k]));  // as store16_int8_floor
      codes[k] = _mm512_cvtsepi32_epi8(_mm512_cvt_roundps_epi32(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC));
    }
    __m128i lo = codes[0], hi = codes[1];
    if constexpr (kSplitsPairs<T>) {  // the even- and the odd-indexed values' codes, interleaved back
      lo = _mm_unpacklo_epi8(codes[0], codes[1]);
      hi = _mm_unpackhi_epi8(codes[0], codes[1]);
    }
    store_bytes16(p, lo, stream);
    store_bytes16(p + 16, hi, stream);
    return;
  }
#endif
  store16_int8_floor<T>(p, half16<T, 0>(v), stream);
  store16_int8_floor<T>(p + 16, half16<T, 1>(v), stream);
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

}  // namespace SGL_NPU_CODEGEN
}  // namespace sgl_npu_core
