#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

// The cos/sin row of a token: the token's own, or its position's.
inline int64_t table_row(const HeadNormRopeArgs& a, int64_t token) {
  if (!a.positions) return token;
  return a.positions_int64 ? static_cast<const int64_t*>(a.positions)[token]
                           : static_cast<const int32_t*>(a.positions)[token];
}

// Per-token rotation tables C and S over rope_dim dims (see HeadNormRopeArgs), the sign folded into S. Asks for
// the next token's rows too: gathered at positions, they are random reads of a cache far bigger than the caches.
template <class C>
void ask_next_table_rows(const HeadNormRopeArgs& a, int64_t token, int64_t end) {
  if (!a.positions || token + 1 >= end) return;
  const int64_t next = table_row(a, token + 1) * a.table_stride;
  const int64_t bytes = (a.full_width ? a.rope_dim : a.rope_dim / 2) * int64_t(sizeof(C));
  prefetch_bytes(static_cast<const C*>(a.cos) + next, bytes);
  prefetch_bytes(static_cast<const C*>(a.sin) + next, bytes);
}

template <class C>
void fill_tables(const HeadNormRopeArgs& a, int64_t token, int64_t end, float* c_tab, float* s_tab) {
  const int64_t half = a.rope_dim / 2;
  ask_next_table_rows<C>(a, token, end);
  const int64_t row = table_row(a, token);
  const C* cos = static_cast<const C*>(a.cos) + row * a.table_stride;
  const C* sin = static_cast<const C*>(a.sin) + row * a.table_stride;
  // Per pair k: the first element (j = k for NeoX, 2k for GPT-J) adds its partner negated.
  for (int64_t k = 0; k < half; ++k) {
    const int64_t first = a.neox ? k : 2 * k, second = a.neox ? k + half : 2 * k + 1;
    const int64_t from = a.neox && a.full_width ? k + half : k;  // the second element's table column
    c_tab[first] = to_float(cos[k]);
    s_tab[first] = -to_float(sin[k]);
    c_tab[second] = to_float(cos[from]);
    s_tab[second] = to_float(sin[from]);
  }
}

// Whether two vectors hold the same bits (-0 and 0 differ).
inline bool same_bits(f32x8 a, f32x8 b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// fill_tables + permute16<bf16_t> for NeoX tables whose halves are whole blocks of 16 (tokens16): each block of 16
// table values loaded once and split into its even and odd values, where the scalar loops convert and move one
// value at a time (alternated in one process, 4096 tokens: pos_cache 1.06-1.07x, split and gate 1.03-1.05x).
// Returns whether the tables are mirrored: the second half's C the first's and its S the first's negated, as always
// from half-width rows and from full-width ones whose halves repeat (the usual cat([sin, sin])).
template <class C>
bool fill_tables16_neox(const HeadNormRopeArgs& a, int64_t token, int64_t end, float* c_tab, float* s_tab) {
  const int64_t half = a.rope_dim / 2;
  ask_next_table_rows<C>(a, token, end);
  const int64_t row = table_row(a, token) * a.table_stride, second = a.full_width ? half : 0;
  const C* cos = static_cast<const C*>(a.cos) + row;
  const C* sin = static_cast<const C*>(a.sin) + row;
  auto evens_odds = [](const C* p) {  // 16 values in load16<bf16_t>'s order (memory order where it keeps that)
    if constexpr (kSplitsPairs<bf16_t>) return load16_evens_odds(p);
    return f32x8x2{load8(p), load8(p + kVec)};
  };
  bool mirrored = true;
  for (int64_t j = 0; j < half; j += 2 * kVec) {
    const f32x8x2 c = evens_odds(cos + j), s = evens_odds(sin + j);
    const f32x8x2 c2 = evens_odds(cos + second + j), s2 = evens_odds(sin + second + j);
    if (second)
      mirrored = mirrored && same_bits(c.lo, c2.lo) && same_bits(c.hi, c2.hi) && same_bits(s.lo, s2.lo) &&
                 same_bits(s.hi, s2.hi);
    store8(c_tab + j, c.lo), store8(c_tab + j + kVec, c.hi);
    store8(s_tab + j, -s.lo), store8(s_tab + j + kVec, -s.hi);
    store8(c_tab + half + j, c2.lo), store8(c_tab + half + j + kVec, c2.hi);
    store8(s_tab + half + j, s2.lo), store8(s_tab + half + j + kVec, s2.hi);
  }
  return mirrored;
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

// rstd[h] from head h's sum of squares for token t: 1 without a norm, the given per-token rstd, or
// 1 / sqrt(mean + eps). Taken for every head of a token before any second pass: one head's sum -> sqrt -> division
// chain is long, and the heads' chains are independent, so they overlap here instead of each stalling its head.
// rstd holds the sums, padded to whole vectors (heads_rstd_buffer).
inline void heads_rstd(const HeadNormRopeArgs& a, int64_t t, std::vector<float>& rstd) {
  if (!a.norm || a.rstd) {
    std::fill(rstd.begin(), rstd.end(), a.norm ? a.rstd[t * a.rstd_stride] : 1.f);
    return;
  }
  if (a.whole_width) {  // one norm over the heads' sums
    float total = 0.f;
    for (int64_t h = 0; h < a.heads; ++h) total += rstd[h];
    std::fill(rstd.begin(), rstd.end(), 1.f / std::sqrt(total / float(a.heads * a.width) + a.eps));
    return;
  }
  // Eight heads per step, rounded as the scalar formula (division and square root are correctly rounded).
  for (size_t h = 0; h < rstd.size(); h += kVec)
    store8(rstd.data() + h, splat(1.f) / vsqrt(load8(rstd.data() + h) / float(a.width) + a.eps));
}
inline std::vector<float> heads_rstd_buffer(const HeadNormRopeArgs& a) {
  return std::vector<float>((a.heads + kVec - 1) / kVec * kVec, 0.f);
}

// A bf16 head's sum of squares (w a multiple of 16), lane by lane. The paired bf16 products (vdpbf16ps) count
// denormal values as zero, as fp32 squares of them would round anyway; the sum itself is flushed below 2^-126,
// which only an eps far below any real one could tell apart.
inline f32x8 head_squares(const bf16_t* x, int64_t w, bool paired) {
  f32x8 acc0 = splat(0.f), acc1 = splat(0.f);
  int64_t j = 0;
#if defined(SGL_NPU_BF16_DOT)
  if (paired) {
    for (; j + 4 * kVec <= w; j += 4 * kVec) {
      acc0 = dot_pairs(acc0, x + j, x + j);
      acc1 = dot_pairs(acc1, x + j + 2 * kVec, x + j + 2 * kVec);
    }
    if (j < w) acc0 = dot_pairs(acc0, x + j, x + j);
    return acc0 + acc1;
  }
#else
  (void)paired;
#endif
  for (; j < w; j += 2 * kVec) {
    const f32x8x2 v = load16(x + j);
    acc0 += v.lo * v.lo;
    acc1 += v.hi * v.hi;
  }
  return acc0 + acc1;
}

// Head h's weight or bias (null without a norm or without the parameter).
inline const float* head_param(const HeadNormRopeArgs& a, const float* param, int64_t h) {
  return a.norm && param ? param + h * a.param_head_stride : nullptr;
}

// Token t's rotation tables (rope_dim values each) in load16<bf16_t>'s order; whether they are mirrored NeoX tables
// (see fill_tables16_neox).
template <class C>
bool fill_tables16(const HeadNormRopeArgs& a, int64_t t, int64_t end, float* c_tab, float* s_tab) {
  if (a.rope_dim && a.neox) return fill_tables16_neox<C>(a, t, end, c_tab, s_tab);
  if (a.rope_dim) {
    fill_tables<C>(a, t, end, c_tab, s_tab);
    permute16<bf16_t>(c_tab, a.rope_dim);
    permute16<bf16_t>(s_tab, a.rope_dim);
  }
  return false;
}

// Head h of token t of a bf16 call.
[[gnu::always_inline]] inline const bf16_t* head_of(const HeadNormRopeArgs& a, int64_t t, int64_t h) {
  return static_cast<const bf16_t*>(a.x) + t * a.x_token_stride + h * a.x_head_stride;
}

// heads_rstd for token t of the bf16 paths, the sums of squares taken eight heads at a time.
inline void bf16_heads_rstd(const HeadNormRopeArgs& a, int64_t t, std::vector<float>& rstd) {
  const bool paired = a.eps >= 0x1p-100f;  // see head_squares
  if (a.norm && !a.rstd)
    for (int64_t h0 = 0; h0 < a.heads; h0 += kVec) {  // eight heads' sums reduced together
      f32x8 sums[kVec];
      for (int64_t i = 0; i < kVec; ++i)
        sums[i] = h0 + i < a.heads ? head_squares(head_of(a, t, h0 + i), a.width, paired) : splat(0.f);
      store8(rstd.data() + h0, reduce_add8(sums));
    }
  heads_rstd(a, t, rstd);
}

// The next token's head h, asked for while head h of token t is computed: the requests spread over the whole token's
// arithmetic keep DRAM busy alongside it (split_qkv_rmsnorm_rope 4096 x Qwen3-8B bf16, interleaved in one process:
// 1.14-1.25x over asking for them all during the sums, which fills the miss buffers and stalls). Or the caller's
// rows (next_rows), a slice per head: head h of `heads` (the heads of every group computed per token, see
// HeadNormRopeArgs::then).
[[gnu::always_inline]] inline void ask_next_head(const HeadNormRopeArgs& a, int64_t t, int64_t end, int64_t h,
                                                 int64_t heads) {
  if (!a.next_rows.base) {
    if (t + 1 < end) prefetch_bytes(head_of(a, t + 1, h), a.width * int64_t(sizeof(bf16_t)));
  } else if (t + 1 < a.next_rows.until) {
    const int64_t slice = (a.next_rows.bytes / heads + 63) / 64 * 64, from = h * slice;
    if (from < a.next_rows.bytes)
      prefetch_bytes(a.next_rows.base + (t + 1) * a.next_rows.stride + from, std::min(slice, a.next_rows.bytes - from));
  }
}
[[gnu::always_inline]] inline void ask_next_head(const HeadNormRopeArgs& a, int64_t t, int64_t end, int64_t h) {
  ask_next_head(a, t, end, h, a.heads);
}

// The per-token state of the bf16 paths: the rotation tables (rope_dim values each, load16<bf16_t>'s order; tokens32
// regroups them in place) and the heads' rstd, one task's buffers reused token by token.
struct TokenState {
  std::vector<float> buf, rstd;
  float *c_tab, *s_tab;
  bool mirrored = false;  // see fill_tables16_neox
  explicit TokenState(const HeadNormRopeArgs& a)
      : buf(2 * a.rope_dim), rstd(heads_rstd_buffer(a)), c_tab(buf.data()), s_tab(buf.data() + a.rope_dim) {}
  template <class C>
  void take(const HeadNormRopeArgs& a, int64_t t, int64_t end) {
    mirrored = fill_tables16<C>(a, t, end, c_tab, s_tab);
    bf16_heads_rstd(a, t, rstd);
  }
};

// Head h of token t's output.
[[gnu::always_inline]] inline bf16_t* out_head(const HeadNormRopeArgs& a, int64_t t, int64_t h) {
  return static_cast<bf16_t*>(a.out) + t * a.out_token_stride + h * a.out_head_stride;
}

// The 16-wide path for bf16 heads (a.by16: the head, the rotated dims and each NeoX half are whole blocks of 16):
// values stay in load16's order, the rotation tables are arranged to match (and weight / bias arrive so). No fp32
// copy of the head: the second pass reloads it from L1.
template <class C, bool kStream>
void tokens16(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  using T = bf16_t;
  const int64_t w = a.width, r = a.rope_dim, half = r / 2;
  TokenState token(a);
  const float *c_tab = token.c_tab, *s_tab = token.s_tab;
  auto table = [](const float* tab, int64_t j) { return f32x8x2{load8(tab + j), load8(tab + j + kVec)}; };
  // a * c + b * s, lane by lane
  auto rotate = [](f32x8x2 x, f32x8x2 c, f32x8x2 y, f32x8x2 s) {
    return f32x8x2{x.lo * c.lo + y.lo * s.lo, x.hi * c.hi + y.hi * s.hi};
  };
  for (int64_t t = begin; t < end; ++t) {
    token.take<C>(a, t, end);
    for (int64_t h = 0; h < a.heads; ++h) {
      const T* x = head_of(a, t, h);
      T* out = out_head(a, t, h);
      const float rstd_h = token.rstd[h];
      ask_next_head(a, t, end, h);
      const float *wp = head_param(a, a.weight, h), *bp = head_param(a, a.bias, h);
      // x may be out: every block is read before it (or its rotation partner) is written.
      auto scaled = [&](int64_t j) {  // the normed values before their rounding to T
        f32x8x2 v = load16(x + j);
        if (!a.norm) return v;
        v = {v.lo * rstd_h, v.hi * rstd_h};
        if (wp) v = {v.lo * load8(wp + j), v.hi * load8(wp + j + kVec)};
        if (bp) v = {v.lo + load8(bp + j), v.hi + load8(bp + j + kVec)};
        return v;
      };
      auto normed = [&](int64_t j) { return a.norm ? round16_to<T>(scaled(j)) : scaled(j); };
      int64_t j = 0;
      if (r && a.neox) {
        for (; j < half; j += 2 * kVec) {
          const f32x8x2 lo = normed(j), hi = normed(j + half);
          store16(out + j, rotate(lo, table(c_tab, j), hi, table(s_tab, j)), kStream);
          store16(out + j + half, rotate(hi, table(c_tab, j + half), lo, table(s_tab, j + half)), kStream);
        }
        j = r;
      } else if (r) {
        for (; j < r; j += 2 * kVec) {
          const f32x8x2 v = normed(j);
          f32x8x2 partner;  // the other element of each (2i, 2i+1) pair
          if constexpr (kSplitsPairs<T>) {
            partner = {v.hi, v.lo};  // evens in lo, odds in hi: the pairs face each other
          } else {
            partner = {__builtin_shufflevector(v.lo, v.lo, 1, 0, 3, 2, 5, 4, 7, 6),
                       __builtin_shufflevector(v.hi, v.hi, 1, 0, 3, 2, 5, 4, 7, 6)};
          }
          store16(out + j, rotate(v, table(c_tab, j), partner, table(s_tab, j)), kStream);
        }
      }
      // The dims past the rotation: store16's own rounding is normed's (rounding to T twice changes nothing), so
      // they skip the first (Qwen3-Next shapes, a quarter of each head rotated, alternated in one process: split,
      // pos_cache and TP 1.10-1.14x at 4096 and 128 tokens, gate 1.05-1.11x).
      for (; j < w; j += 2 * kVec) store16(out + j, scaled(j), kStream);
    }
  }
  if (kStream) stream_fence();
}

#if defined(SGL_NPU_HAVE_F32X16) && defined(SGL_NPU_BF16_CONVERT_INSN)
// Whether tokens32 takes a call of tokens16's: the head, the rotated dims and each NeoX half whole blocks of 32.
inline bool by32(const HeadNormRopeArgs& a) {
  return a.width % 32 == 0 && a.rope_dim % 32 == 0 && (!a.neox || a.rope_dim / 2 % 32 == 0);
}

// n values (n % 32 == 0) from load16<bf16_t>'s order into load32's, in place: per block of 32, the evens and the odds
// of its two blocks of 16, [e0 o0 e1 o1] -> [e0 e1 o0 o1] (eight values each).
inline void regroup32(float* v, int64_t n) {
  for (int64_t i = 0; i < n; i += 32) {
    const f32x8 o0 = load8(v + i + 8), e1 = load8(v + i + 16);
    store8(v + i + 8, e1);
    store8(v + i + 16, o0);
  }
}

// One head group's weight and bias in load32<bf16_t>'s order, regrouped once per call (one head's, or every head's).
struct Params32 {
  std::vector<float> buf;
  const float *weight = nullptr, *bias = nullptr;
  Params32() = default;  // none (no second group)
  explicit Params32(const HeadNormRopeArgs& a) {
    const int64_t len = a.param_head_stride ? a.heads * a.param_head_stride : a.width;
    if (!a.norm || (!a.weight && !a.bias)) return;
    buf.resize(2 * len);
    auto regrouped = [&](const float* p, float* into) -> const float* {
      if (!p) return nullptr;
      std::copy(p, p + len, into);
      regroup32(into, len);
      return into;
    };
    weight = regrouped(a.weight, buf.data());
    bias = regrouped(a.bias, buf.data() + len);
  }
};

// Token t's heads of one group on blocks of 32 (the token's tables regrouped, rstd taken), asking for the next
// token's rows as heads [first, first + a.heads) of `asked` heads in all.
template <bool kStream>
void heads32(const HeadNormRopeArgs& a, const Params32& p, const float* rstd, const TokenState& token, int64_t t,
             int64_t end, const HeadNormRopeArgs& asker, int64_t first, int64_t asked) {
  using T = bf16_t;
  const int64_t w = a.width, r = a.rope_dim, half = r / 2;
  const float *c_tab = token.c_tab, *s_tab = token.s_tab;
  // Mirrored tables (see fill_tables16_neox): both halves take the first half's, four loads fewer per 64 values
  // (4096 tokens, alternated in one process on two threads, medians of 12-15 rounds: Qwen3-8B split, TP, gate and
  // pos_cache 1.03-1.10x, mrope 1.04x; Qwen3-Next 0.99-1.07x; outputs bit-identical).
  const bool mirrored = token.mirrored;
  struct Head {
    const T* x;  // may be out: every block is read before it (or its rotation partner) is written
    T* out;
    float rstd;
    const float *weight, *bias;  // or null
  };
  auto head = [&](int64_t h) __attribute__((always_inline)) {
    if (asker.next_rows.base)
      ask_next_head(asker, t, end, first + h, asked);
    else
      ask_next_head(a, t, end, h);
    return Head{head_of(a, t, h), out_head(a, t, h), rstd[h], p.weight ? p.weight + h * a.param_head_stride : nullptr,
                p.bias ? p.bias + h * a.param_head_stride : nullptr};
  };
  // Head e's dims [j, j + 32) normed: scaled (before the rounding to T), normed (rounded).
  auto scaled = [&](const Head& e, int64_t j, f32x16* v) __attribute__((always_inline)) {
    load32(e.x + j, v);
    if (!a.norm) return;
    for (int k = 0; k < 2; ++k) {
      v[k] = v[k] * e.rstd;
      if (e.weight) v[k] = v[k] * load16_wide(e.weight + j + 16 * k);
      if (e.bias) v[k] = v[k] + load16_wide(e.bias + j + 16 * k);
    }
  };
  auto normed = [&](const Head& e, int64_t j, f32x16* v) __attribute__((always_inline)) {
    scaled(e, j, v);
    if (a.norm) round32_to<T>(v);
  };
  // NeoX: dims [j, j + 32) and their partners [j + half, j + half + 32) rotated and stored.
  auto neox_put = [&](const Head& e, int64_t j, const f32x16* lo, const f32x16* hi) __attribute__((always_inline)) {
    f32x16 c[2], s[2], o[2];
    load32(c_tab + j, c);
    load32(s_tab + j, s);
    for (int k = 0; k < 2; ++k) o[k] = lo[k] * c[k] + hi[k] * s[k];
    store32(e.out + j, o, kStream);
    if (mirrored) {
      for (int k = 0; k < 2; ++k) o[k] = hi[k] * c[k] - lo[k] * s[k];
    } else {
      load32(c_tab + j + half, c);
      load32(s_tab + j + half, s);
      for (int k = 0; k < 2; ++k) o[k] = hi[k] * c[k] + lo[k] * s[k];
    }
    store32(e.out + j + half, o, kStream);
  };
  int64_t h = 0;
  // Heads rotated whole, two at a time, both heads' blocks read and normed before either's rotation: the two
  // chains of load, norm, rounding, rotation and conversion side by side in the instruction stream, where the
  // out-of-order window had not overlapped them (Qwen3-8B shapes, alternated in one process on two threads: split,
  // pos_cache, mrope, TP and gate 1.07-1.10x at 128 tokens, 1.01-1.11x at 4096; 1.05-1.08x at 64 tokens on one
  // thread; outputs bit-identical). Partly rotated heads keep one at a time: at Qwen3-Next shapes (a quarter of each
  // head rotated) pairs ran 0.93-0.97x at 4096 tokens. (Written as a loop over an array of heads, GCC kept the
  // blocks in memory: 0.8x.)
  if (r == w && a.neox && a.norm)
    for (; h + 2 <= a.heads; h += 2) {
      const Head e0 = head(h), e1 = head(h + 1);
      for (int64_t j = 0; j < half; j += 32) {
        f32x16 lo0[2], hi0[2], lo1[2], hi1[2];
        normed(e0, j, lo0);
        normed(e1, j, lo1);
        normed(e0, j + half, hi0);
        normed(e1, j + half, hi1);
        neox_put(e0, j, lo0, hi0);
        neox_put(e1, j, lo1, hi1);
      }
    }
  for (; h < a.heads; ++h) {
    const Head e = head(h);
    int64_t j = 0;
    if (r && a.neox) {
      for (; j < half; j += 32) {
        f32x16 lo[2], hi[2];
        normed(e, j, lo);
        normed(e, j + half, hi);
        neox_put(e, j, lo, hi);
      }
      j = r;
    } else if (r) {
      for (; j < r; j += 32) {  // evens in v[0], odds in v[1]: each (2i, 2i + 1) pair faces itself
        f32x16 v[2], c[2], s[2], o[2];
        normed(e, j, v);
        load32(c_tab + j, c);
        load32(s_tab + j, s);
        o[0] = v[0] * c[0] + v[1] * s[0];
        o[1] = v[1] * c[1] + v[0] * s[1];
        store32(e.out + j, o, kStream);
      }
    }
    for (; j < w; j += 32) {  // past the rotation: store32's rounding is normed's (see tokens16)
      f32x16 v[2];
      scaled(e, j, v);
      store32(e.out + j, v, kStream);
    }
  }
}

// tokens16 on blocks of 32 values, two 16-lane vectors in load32<bf16_t>'s order (regrouped tables and parameters):
// half the instructions per value, and one denormal test, conversion and permute per 32 values where the 16-wide
// path takes two. (The heads' sums of squares stay tokens16's.) See wide_heads for the calls it takes. With a.then
// (see HeadNormRopeArgs), each token's heads of both groups in turn, on the token's one set of tables.
template <class C>
void tokens32(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  const HeadNormRopeArgs* b = a.then;
  TokenState token(a);
  const Params32 pa(a);
  const Params32 pb = b ? Params32(*b) : Params32();
  std::vector<float> rstd_b = b ? heads_rstd_buffer(*b) : std::vector<float>();
  const int64_t asked = a.heads + (b ? b->heads : 0);
  auto run = [&](const HeadNormRopeArgs& g, const Params32& p, const float* rstd, int64_t t, int64_t first) {
    if (g.stream)
      heads32<true>(g, p, rstd, token, t, end, a, first, asked);
    else
      heads32<false>(g, p, rstd, token, t, end, a, first, asked);
  };
  for (int64_t t = begin; t < end; ++t) {
    token.take<C>(a, t, end);
    regroup32(token.c_tab, a.rope_dim);
    regroup32(token.s_tab, a.rope_dim);
    run(a, pa, token.rstd.data(), t, 0);
    if (b) {
      bf16_heads_rstd(*b, t, rstd_b);
      run(*b, pb, rstd_b.data(), t, a.heads);
    }
  }
  if (a.stream || (b && b->stream)) stream_fence();
}

// Whether tokens32 takes a call of tokens16's. Alternated in one process with tokens16 on two threads: cache-resident
// calls (128 tokens) 1.04-1.12x on both models' shapes. Streamed ones (4096 tokens) gain where the caller asks for
// whole next rows (the split ops): split and pos_cache 1.06-1.12x at Qwen3-8B shapes and 1.19-1.22x at Qwen3-Next,
// mrope 0.97-1.05x and 1.18-1.31x (Qwen3-Next's, with gates), TP 0.96-1.09x, gate 1.04-1.12x at Qwen3-Next; the one
// loss is gate at Qwen3-8B shapes, 0.86-1.04x across runs. The calls that ask for one head at a time (mqa) ran
// 0.90-0.96x and keep tokens16. (On one thread split, mrope and gate all gained, 1.04-1.25x.)
inline bool wide_heads(const HeadNormRopeArgs& a, bool stream) { return by32(a) && (!stream || a.next_rows.base); }

// Whether tokens32 takes a and a.then together: bf16 heads on whole blocks of 32 in both, on the same tables, and the
// rows asked for by a's requests (or nothing streamed).
inline bool takes_pair(const HeadNormRopeArgs& a) {
  const HeadNormRopeArgs& b = *a.then;
  const bool same_tables = a.cos == b.cos && a.sin == b.sin && a.positions == b.positions &&
                           a.positions_int64 == b.positions_int64 && a.rope_dim == b.rope_dim && a.neox == b.neox &&
                           a.full_width == b.full_width && a.table_dtype == b.table_dtype &&
                           a.table_stride == b.table_stride;
  return a.dtype == DType::bf16 && b.dtype == DType::bf16 && a.by16 && b.by16 && by32(a) && by32(b) && same_tables &&
         (a.next_rows.base || (!a.stream && !b.stream));
}
#else
inline bool takes_pair(const HeadNormRopeArgs&) { return false; }
#endif

template <class T, class C, bool kStream>
void tokens(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  if constexpr (std::is_same_v<T, bf16_t>) {
#if defined(SGL_NPU_HAVE_F32X16) && defined(SGL_NPU_BF16_CONVERT_INSN)
    if (a.by16 && wide_heads(a, kStream)) return tokens32<C>(a, begin, end);
#endif
    if (a.by16) return tokens16<C, kStream>(a, begin, end);
  }
  const int64_t w = a.width;
  // Every head of a token as fp32 with its sum of squares first, then each head's second pass (see heads_rstd).
  std::vector<float> buf(a.heads * w + 2 * a.rope_dim), rstd = heads_rstd_buffer(a);
  float* c_tab = buf.data() + a.heads * w;
  float* s_tab = c_tab + a.rope_dim;
  for (int64_t t = begin; t < end; ++t) {
    if (a.rope_dim) fill_tables<C>(a, t, end, c_tab, s_tab);
    for (int64_t h = 0; h < a.heads; ++h) {
      // x may alias out: every head of the token is read before anything is written.
      const T* x = static_cast<const T*>(a.x) + t * a.x_token_stride + h * a.x_head_stride;
      float* y = buf.data() + h * w;
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
      rstd[h] = ss + reduce_add(acc0 + acc1);
    }
    heads_rstd(a, t, rstd);
    for (int64_t h = 0; h < a.heads; ++h) {
      T* out = static_cast<T*>(a.out) + t * a.out_token_stride + h * a.out_head_stride;
      const Normed<T> normed{buf.data() + h * w, a.norm, rstd[h], head_param(a, a.weight, h), head_param(a, a.bias, h)};
      rotate_store<T, kStream>(a, normed, c_tab, s_tab, out);
    }
  }
  if (kStream) stream_fence();
}

}  // namespace

void head_norm_rope_tokens(const HeadNormRopeArgs& a, int64_t begin, int64_t end) {
  if (a.then && !takes_pair(a)) {  // each group over the range in turn
    HeadNormRopeArgs alone = a;
    alone.then = nullptr;
    head_norm_rope_tokens(alone, begin, end);
    head_norm_rope_tokens(*a.then, begin, end);
    return;
  }
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
