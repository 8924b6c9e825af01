#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/paged.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

constexpr int64_t kBlock = 32;     // keys per block: each V row converted to fp32 once for all of a task's rows
constexpr int64_t kScoreRows = 4;  // query rows scored together against each pair of keys
constexpr int64_t kGemmRows = 24;  // from this many query rows a task scores with score_block_gemm
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// acc[0, n) = acc * scale + p * v
void scale_add(float* acc, float scale, float p, const float* v, int64_t n) {
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) store8(acc + i, load8(acc + i) * scale + load8(v + i) * p);
  for (; i < n; ++i) acc[i] = acc[i] * scale + v[i] * p;
}

// The next block's K and V rows of one head, asked for from the caches a row or two at a time while this block is
// scored (and, with v_by_pv, its V rows while this block's P V is summed): spread so, the requests keep DRAM busy
// alongside the arithmetic, where all at once they would overflow the miss buffers and stall it. Decode 16x32/8x4096
// bf16, two threads: 1.5x faster than without them; 1.27x more with the V rows' requests moved into P V.
struct NextRows {
  const char* k = nullptr;
  const char* v = nullptr;
  int64_t k_stride = 0, v_stride = 0, k_bytes = 0, v_bytes = 0, rows = 0;
  bool v_by_pv = false;  // the P V pass asks for the V rows (ask_v), ask() only for K's
  // Row j < rows, into L2 (a block of every head's rows comes between the request and the use).
  void ask(int64_t j) const {
    prefetch_bytes<2>(k + j * k_stride, k_bytes);
    if (!v_by_pv) ask_v(j);
  }
  void ask_v(int64_t j) const { prefetch_bytes<2>(v + j * v_stride, v_bytes); }
  void ask_from(int64_t j) const {
    for (; j < rows; ++j) ask(j);
  }
};

// s[r * kBlock + j] = scale * q_r . k_j for rows r < MR (d apart) and keys j < n (cache rows ldk apart, converted to
// fp32 in registers, or, for bf16 q (Q), multiplied in pairs by dot_pairs); s is written for j < round_up(n, 8) (0
// past n). Keys go in pairs: each K vector is loaded once for the MR rows, and the eight lanes of a (row, key) partial
// sum are reduced eight keys at a time. Each pair asks for two of `next`'s rows.
template <int MR, class T, class Q>
void score_rows(const Q* q, int64_t d, const T* k, int64_t ldk, int64_t n, float scale, float* s,
                const NextRows& next) {
  static_assert(std::is_same_v<Q, float> || (kBf16Dot && std::is_same_v<Q, bf16_t> && std::is_same_v<T, bf16_t>));
  constexpr int64_t step = std::is_same_v<Q, float> ? kVec : 2 * kVec;
  f32x8 part[MR][kBlock];
  const int64_t dv8 = d / step * step, n8 = round_up(n, kVec);
  for (int64_t j = 0; j < n; j += 2) {
    if (j + 1 < next.rows) {
      next.ask(j);
      next.ask(j + 1);
    }
    const T* k0 = k + j * ldk;
    const T* k1 = j + 1 < n ? k0 + ldk : k0;
    f32x8 a0[MR], a1[MR];
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) a0[r] = a1[r] = splat(0.f);
    for (int64_t c = 0; c < dv8; c += step) {
      if constexpr (std::is_same_v<Q, float>) {
        const f32x8 x0 = load8(k0 + c), x1 = load8(k1 + c);
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          const f32x8 y = load8(q + r * d + c);
          a0[r] += y * x0;
          a1[r] += y * x1;
        }
      } else {
#if defined(__AVX512BF16__) && defined(__AVX512VL__)
#pragma GCC unroll 4
        for (int r = 0; r < MR; ++r) {
          a0[r] = dot_pairs(a0[r], q + r * d + c, k0 + c);
          a1[r] = dot_pairs(a1[r], q + r * d + c, k1 + c);
        }
#endif
      }
    }
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      part[r][j] = a0[r];
      if (j + 1 < kBlock) part[r][j + 1] = a1[r];
    }
  }
  next.ask_from(std::min(round_up(n, 2), next.rows / 2 * 2));  // what the pairs did not ask for
  for (int r = 0; r < MR; ++r) {
    for (int64_t j = n; j < n8; ++j) part[r][j] = splat(0.f);
    for (int64_t j = 0; j < n8; j += kVec) store8(s + r * kBlock + j, reduce_add8(&part[r][j]) * scale);
    if (dv8 < d)
      for (int64_t j = 0; j < n; ++j)
        for (int64_t c = dv8; c < d; ++c)
          s[r * kBlock + j] += to_float(q[r * d + c]) * to_float(k[j * ldk + c]) * scale;
  }
}

#if defined(SGL_NPU_BF16_DOT) && defined(SGL_NPU_BF16_CONVERT_INSN)
#define SGL_NPU_PAIRS_PV 1
// Asks for next's V rows [row, row + count) one at a time, spread evenly over `calls` calls (the key pairs of a
// tile16_pairs).
struct SpreadAsks {
  const NextRows& next;
  int64_t row, count, calls;
  int64_t owed = 0;  // count * (calls made) - calls * (rows asked for)
  // Inlined: a call here would spill tile16_pairs's accumulators every pair.
  __attribute__((always_inline)) void operator()() {
    for (owed += count; owed >= calls; owed -= calls) next.ask_v(row++);
  }
};

// p[0, n8) rounded to bf16 (n8 a multiple of 8); returns the sum of the rounded values, so that the row's weights and
// its denominator agree.
inline f32x8 round_weights(const float* p, int64_t n8, bf16_t* rounded) {
  f32x8 sum = splat(0.f);
  for (int64_t j = 0; j < n8; j += kVec) {
    const __m128i b = bf16_convert_insn(load8(p + j));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(rounded + j), b);
    sum += bitcast<f32x8>(_mm256_slli_epi32(_mm256_cvtepu16_epi32(b), 16));
  }
  return sum;
}
#endif

#if defined(SGL_NPU_PAIRS_PV)
constexpr bool kPairsPV = true;
#else
constexpr bool kPairsPV = false;
#endif

// S for tiles of many query rows (prefill): K^T of the block in fp32 once, then register-tiled 6 x 16 products
// (tile16), where score_rows would reduce lanes for every (row, key).
template <class T>
void score_block_gemm(int64_t rows, const float* q, int64_t d, const T* k, int64_t ldk, int64_t n, float* s,
                      float* kt) {
  const int64_t n8 = round_up(n, kVec), d8 = d / kVec * kVec;
  int64_t j = 0;
  for (; j + kVec <= n; j += kVec) {  // 8 keys x 8 dims at a time, transposed in registers
    for (int64_t c = 0; c < d8; c += kVec) {
      f32x8 block[kVec];
      for (int i = 0; i < kVec; ++i) block[i] = load8(k + (j + i) * ldk + c);
      transpose8x8(block);
      for (int i = 0; i < kVec; ++i) store8(kt + (c + i) * kBlock + j, block[i]);
    }
    for (int64_t c = d8; c < d; ++c)
      for (int64_t i = j; i < j + kVec; ++i) kt[c * kBlock + i] = to_float(k[i * ldk + c]);
  }
  for (; j < n; ++j) {
    const T* kr = k + j * ldk;
    for (int64_t c = 0; c < d; ++c) kt[c * kBlock + j] = to_float(kr[c]);
  }
  if (n < kBlock)  // a short last block: zero keys past n (full blocks, the usual case, skip d empty fills)
    for (int64_t c = 0; c < d; ++c) std::fill(kt + c * kBlock + n, kt + (c + 1) * kBlock, 0.f);
  for (int64_t r = 0; r < rows; r += kTileRows)
    for (int64_t c0 = 0; c0 < n8; c0 += kTileCols)
      tile16_rows(std::min(kTileRows, rows - r), q + r * d, d, 1, d, kt + c0, kBlock, s + r * kBlock + c0, kBlock,
                  std::min(kTileCols, n8 - c0), nullptr);
}

// S for up to kGemmRows query rows, kScoreRows at a time; the first call asks for `next`.
template <class T, class Q>
void score_block(int64_t rows, const Q* q, int64_t d, const T* k, int64_t ldk, int64_t n, float scale, float* s,
                 const NextRows& next) {
  const NextRows none;
  for (int64_t r = 0; r < rows; r += kScoreRows) {
    const Q* qr = q + r * d;
    float* sr = s + r * kBlock;
    const NextRows& ask = r == 0 ? next : none;
    switch (std::min(kScoreRows, rows - r)) {
      case 1:
        score_rows<1>(qr, d, k, ldk, n, scale, sr, ask);
        break;
      case 2:
        score_rows<2>(qr, d, k, ldk, n, scale, sr, ask);
        break;
      case 3:
        score_rows<3>(qr, d, k, ldk, n, scale, sr, ask);
        break;
      default:
        score_rows<4>(qr, d, k, ldk, n, scale, sr, ask);
    }
  }
}

// A task (tile, group of KV heads, split) holds, per KV head h of its group, the rows r = (t - t0) * group + g (the
// tile's tokens x h's query heads) as Q [rows][d] scaled by sm_scale and, per block of keys inside one page:
//   S [rows][keys] = Q K^T        (score_block)
//   online softmax along each row, keys outside the row's range weighing 0
//   O [rows][dv] = O * rescale + P V   (tile16: P's entries broadcast against 16 columns of V rows; V converted to
//   fp32 once per block for prefill tiles, read from the cache as it is for decode tiles)
// The heads of a group share each block's token rows, so a decode task (all KV heads) reads them front to back.
// V rows and O rows are padded to a multiple of 16 floats (zero columns).
template <class T>
void partial_tasks(const AttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t group = a.q_heads / a.kv_heads, d = a.head_dim, dv = a.head_dim_v, stride = dv + 2;
  const int64_t heads = a.kv_heads_per_task, head_groups = a.kv_heads / heads, dvp = round_up(dv, kTileCols);
  std::vector<float> qf, vf(kBlock * dvp, 0.f), kt(kBlock * d), scores, oacc, m, l, rescale, row_sum;
  std::vector<bf16_t> p16;  // P rounded to bf16 (tile16_pairs)
  std::vector<T> qt;        // the tile's queries as they are, for the bf16 decode scores (dot_pairs)
  for (int64_t task = begin; task < end; ++task) {
    const int64_t split = task % a.splits, hk0 = (task / a.splits) % head_groups * heads;
    // Tiles alternate from both ends of the list: the threads get contiguous task ranges, and a causal prefill's
    // late tiles (the most keys) would otherwise all land on the last thread.
    const int64_t nth = task / (a.splits * head_groups), tile = nth % 2 == 0 ? nth / 2 : a.num_tiles - 1 - nth / 2;
    const int64_t t0 = a.tiles[2 * tile], t1 = a.tiles[2 * tile + 1], rows = (t1 - t0) * group;
    // Per head h of the group: its rows' scaled queries, accumulators, maxima and sums at h * rows.
    qf.resize(heads * rows * d);
    scores.resize(rows * kBlock);
    oacc.assign(heads * rows * dvp, 0.f);
    m.assign(heads * rows, kNegInf);
    l.assign(heads * rows, 0.f);
    rescale.assign(round_up(rows, kVec), 0.f);  // padded for vexp
    row_sum.resize(rows);
    const bool dot_bf16 = kBf16Dot && std::is_same_v<T, bf16_t> && rows < kGemmRows;
    if (dot_bf16) qt.resize(heads * rows * d);
    int64_t lo = a.key_lo[t0], hi = a.key_hi[t0];  // the union of the tile's key ranges
    for (int64_t t = t0; t < t1; ++t) {
      lo = std::min(lo, a.key_lo[t]);
      hi = std::max(hi, a.key_hi[t]);
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t g = 0; g < group; ++g) {
          const int64_t i = (h * rows + (t - t0) * group + g) * d;
          const T* src = static_cast<const T*>(a.q) + t * a.q_token_stride + ((hk0 + h) * group + g) * a.q_head_stride;
          if (dot_bf16) {
            std::copy(src, src + d, qt.data() + i);
            continue;
          }
          to_fp32(src, qf.data() + i, d);
          for (int64_t c = 0; c < d; ++c) qf[i + c] *= a.sm_scale;
        }
    }
    const int64_t first = lo + split * a.split_keys, last = std::min(hi, first + a.split_keys);
    // Decode-sized tiles read V rows straight from the cache in P V (widened as loaded) when they are whole
    // 16-column panels; bigger tiles reuse each row across many more query rows and convert it once.
    const bool v_in_place = rows < kGemmRows && dv % kTileCols == 0;
    // bf16 decode tiles weigh V rows two keys at a time (tile16_pairs)
    const bool pairs = kPairsPV && std::is_same_v<T, bf16_t> && v_in_place;
    if (pairs) p16.resize(rows * kBlock);
    const int32_t* pages = a.block_table + a.query_req[t0] * a.block_table_stride;
    const T* k_heads = static_cast<const T*>(a.k_cache) + hk0 * a.k_head_stride;
    const T* v_heads = static_cast<const T*>(a.v_cache) + hk0 * a.v_head_stride;
    // Blocks of up to kBlock keys inside one page: their K and V rows are token_stride apart. When the task has
    // every head of a token row (decode), a block's K rows are one span of memory (V's too), and each head asks for
    // its share of the next block's spans in address order rather than its own rows (decode 16x32/8x4096: 27 -> 31 %
    // of copy, measured while the requests still came in one burst per head).
    const bool spans = heads * a.k_head_stride == a.k_token_stride && a.k_head_stride == d &&
                       heads * a.v_head_stride == a.v_token_stride && a.v_head_stride == dv;
    const int64_t k_row = a.k_token_stride * int64_t(sizeof(T)), v_row = a.v_token_stride * int64_t(sizeof(T));
    const int64_t k_bytes = d * int64_t(sizeof(T)), v_bytes = dv * int64_t(sizeof(T));
    const int64_t k_head_bytes = a.k_head_stride * int64_t(sizeof(T)),
                  v_head_bytes = a.v_head_stride * int64_t(sizeof(T));
    auto attend_block = [&](int64_t k0, int64_t n, int64_t block, int64_t offset) {
      const int64_t next = k0 + n;
      int64_t nn = 0;  // the next block's keys
      const char *kn = nullptr, *vn = nullptr;
      if (next < last) {
        const int64_t nb = pages[next / a.page_size], no = next % a.page_size;
        nn = std::min({kBlock, last - next, a.page_size - no});
        kn = reinterpret_cast<const char*>(k_heads + nb * a.k_block_stride + no * a.k_token_stride);
        vn = reinterpret_cast<const char*>(v_heads + nb * a.v_block_stride + no * a.v_token_stride);
      }
      for (int64_t h = 0; h < heads; ++h) {
        const T* k = k_heads + h * a.k_head_stride + block * a.k_block_stride + offset * a.k_token_stride;
        const T* v = v_heads + h * a.v_head_stride + block * a.v_block_stride + offset * a.v_token_stride;
        float* mh = m.data() + h * rows;
        float* lh = l.data() + h * rows;
        NextRows next_rows;
        if (nn > 0 && spans)  // the h-th slices of the two spans, a row's width at a time
          next_rows = {kn + h * nn * k_bytes, vn + h * nn * v_bytes, k_bytes, v_bytes, k_bytes, v_bytes, nn};
        else if (nn > 0)  // head h's rows
          next_rows = {kn + h * k_head_bytes, vn + h * v_head_bytes, k_row, v_row, k_bytes, v_bytes, nn};
        next_rows.v_by_pv = pairs;
        if (!v_in_place)
          for (int64_t j = 0; j < n; ++j) to_fp32(v + j * a.v_token_stride, vf.data() + j * dvp, dv);
        if (rows >= kGemmRows) {  // prefill tiles: arithmetic enough to hide one burst
          next_rows.ask_from(0);
          score_block_gemm(rows, qf.data() + h * rows * d, d, k, a.k_token_stride, n, scores.data(), kt.data());
        } else if (dot_bf16) {
          if constexpr (kBf16Dot && std::is_same_v<T, bf16_t>)
            score_block(rows, qt.data() + h * rows * d, d, k, a.k_token_stride, n, a.sm_scale, scores.data(),
                        next_rows);
        } else {
          score_block(rows, qf.data() + h * rows * d, d, k, a.k_token_stride, n, 1.f, scores.data(), next_rows);
        }
        const int64_t n8 = round_up(n, kVec);
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t t = t0 + r / group;
          float* s = scores.data() + r * kBlock;
          // This row's keys of the block: [j_lo, j_hi); the rest weigh nothing.
          const int64_t j_lo = std::clamp<int64_t>(a.key_lo[t] - k0, 0, n),
                        j_hi = std::clamp<int64_t>(a.key_hi[t] - k0, 0, n);
          if (j_lo >= j_hi) {
            std::fill(s, s + n8, 0.f);
            rescale[r] = 0.f;  // exp(0): the row stays as it is
            row_sum[r] = 0.f;
            if (pairs) std::fill(p16.data() + r * kBlock, p16.data() + (r + 1) * kBlock, bf16_t{});
            continue;
          }
          const bool masked = j_lo > 0 || j_hi < n8;
          if (masked)
            for (int64_t j = 0; j < n8; ++j)
              if (j < j_lo || j >= j_hi) s[j] = kNegInf;
          // Online softmax: rescale what came before to the new max, then weigh this block's values.
          f32x8 mx = load8(s);
          for (int64_t j = kVec; j < n8; j += kVec) mx = vmax(mx, load8(s + j));
          const float m_old = mh[r], m_new = std::max(m_old, reduce_max(mx));
          f32x8 sum = exp_shifted_sum(s, kVec, n8 / kVec, splat(m_new));
          if (masked) {  // vexp saturates: a masked key would weigh ~1e-38
            sum = splat(0.f);
            for (int64_t j = 0; j < n8; ++j)
              if (j < j_lo || j >= j_hi) s[j] = 0.f;
            for (int64_t j = 0; j < n8; j += kVec) sum += load8(s + j);
          }
#if defined(SGL_NPU_PAIRS_PV)
          if (pairs) sum = round_weights(s, n8, p16.data() + r * kBlock);
#endif
          rescale[r] = m_old - m_new;  // exponentiated below, eight rows at a time
          mh[r] = m_new;
          row_sum[r] = reduce_add(sum);
        }
        // On a row's first block m_old = -inf and vexp gives ~1e-38 (it saturates), not 0: the row's O and l are
        // still 0 then, so they stay 0.
        for (int64_t r = 0; r < rows; r += kVec) store8(rescale.data() + r, vexp(load8(rescale.data() + r)));
        for (int64_t r = 0; r < rows; ++r) lh[r] = lh[r] * rescale[r] + row_sum[r];
        float* oh = oacc.data() + h * rows * dvp;
#if defined(SGL_NPU_PAIRS_PV)
        if constexpr (std::is_same_v<T, bf16_t>)
          if (pairs) {
            const NextRows none;
            for (int64_t r = 0; r < rows; r += kTileRows) {
              const NextRows& ask = r == 0 ? next_rows : none;  // the first row tile's calls ask for the V rows
              tile16_pairs_rows(std::min(kTileRows, rows - r), p16.data() + r * kBlock, kBlock, n, v, a.v_token_stride,
                                oh + r * dvp, dvp, dv, rescale.data() + r, [&](int64_t col, int64_t width) {
                                  const int64_t first = ask.rows * col / dv;
                                  return SpreadAsks{ask, first, ask.rows * (col + width) / dv - first, (n + 1) / 2};
                                });
            }
            continue;
          }
#endif
        for (int64_t r = 0; r < rows; r += kTileRows)
          for (int64_t c = 0; c < dvp; c += kTileCols) {
            const int64_t mr = std::min(kTileRows, rows - r);
            if (v_in_place)
              tile16_rows(mr, scores.data() + r * kBlock, kBlock, 1, n, v + c, a.v_token_stride, oh + r * dvp + c, dvp,
                          kTileCols, rescale.data() + r);
            else
              tile16_rows(mr, scores.data() + r * kBlock, kBlock, 1, n, vf.data() + c, dvp, oh + r * dvp + c, dvp,
                          kTileCols, rescale.data() + r);
          }
      }
    };
    for_each_page_run(pages, a.page_size, first, last, kBlock, attend_block);
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t0 + r / group, g = r % group, i = h * rows + r;
        float* part = a.partial + (((t * a.q_heads) + (hk0 + h) * group + g) * a.splits + split) * stride;
        std::copy(oacc.data() + i * dvp, oacc.data() + i * dvp + dv, part);
        part[dv] = m[i];
        part[dv + 1] = l[i];
      }
  }
}

template <class T>
void merge_rows(const AttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t dv = a.head_dim_v, stride = dv + 2;
  std::vector<float> acc(dv);
  for (int64_t r = begin; r < end; ++r) {  // r = t * Hq + h
    const int64_t t = r / a.q_heads, h = r % a.q_heads;
    const float* parts = a.partial + r * a.splits * stride;
    float m = a.sinks ? a.sinks[h] : kNegInf;
    for (int64_t s = 0; s < a.splits; ++s) m = std::max(m, parts[s * stride + dv]);
    float sum = a.sinks ? std::exp(a.sinks[h] - m) : 0.f;
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t s = 0; s < a.splits; ++s) {
      const float* p = parts + s * stride;
      if (p[dv] == kNegInf) continue;  // a split that saw no key
      const float w = std::exp(p[dv] - m);
      sum += p[dv + 1] * w;
      scale_add(acc.data(), 1.f, w, p, dv);
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;  // no key and no sink: 0
    T* out = static_cast<T*>(a.out) + t * a.out_token_stride + h * a.out_head_stride;
    int64_t i = 0;
    for (; i + kVec <= dv; i += kVec) store8(out + i, load8(acc.data() + i) * inv);
    for (; i < dv; ++i) out[i] = from_float<T>(acc[i] * inv);
  }
}

}  // namespace

void attention_partial(const AttentionArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { partial_tasks<scalar_t>(a, begin, end); });
}

void attention_merge(const AttentionArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { merge_rows<scalar_t>(a, begin, end); });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
