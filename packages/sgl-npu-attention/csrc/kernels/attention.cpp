#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/paged.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

constexpr int64_t kBlock = 16;  // keys scored together: two vectors of softmax weights per query head
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float dot(const float* a, const float* b, int64_t n) {
  f32x8 acc0 = splat(0.f), acc1 = splat(0.f), acc2 = splat(0.f), acc3 = splat(0.f);
  int64_t i = 0;
  for (; i + 4 * kVec <= n; i += 4 * kVec) {
    acc0 += load8(a + i) * load8(b + i);
    acc1 += load8(a + i + kVec) * load8(b + i + kVec);
    acc2 += load8(a + i + 2 * kVec) * load8(b + i + 2 * kVec);
    acc3 += load8(a + i + 3 * kVec) * load8(b + i + 3 * kVec);
  }
  for (; i + kVec <= n; i += kVec) acc0 += load8(a + i) * load8(b + i);
  float s = reduce_add((acc0 + acc1) + (acc2 + acc3));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// acc[0, n) = acc * scale + p * v
void scale_add(float* acc, float scale, float p, const float* v, int64_t n) {
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) store8(acc + i, load8(acc + i) * scale + load8(v + i) * p);
  for (; i < n; ++i) acc[i] = acc[i] * scale + v[i] * p;
}

// acc[0, dv) = acc * rescale + sum_j p[j] * v[j], v rows dv apart: 32 outputs at a time stay in registers
// while the block's rows stream past.
void weigh_values(float* acc, float rescale, const float* p, const float* v, int64_t rows, int64_t dv) {
  int64_t c = 0;
  for (; c + 4 * kVec <= dv; c += 4 * kVec) {
    f32x8 a0 = load8(acc + c) * rescale, a1 = load8(acc + c + kVec) * rescale;
    f32x8 a2 = load8(acc + c + 2 * kVec) * rescale, a3 = load8(acc + c + 3 * kVec) * rescale;
    for (int64_t j = 0; j < rows; ++j) {
      const float* vj = v + j * dv + c;
      const f32x8 pj = splat(p[j]);
      a0 += pj * load8(vj);
      a1 += pj * load8(vj + kVec);
      a2 += pj * load8(vj + 2 * kVec);
      a3 += pj * load8(vj + 3 * kVec);
    }
    store8(acc + c, a0);
    store8(acc + c + kVec, a1);
    store8(acc + c + 2 * kVec, a2);
    store8(acc + c + 3 * kVec, a3);
  }
  for (; c < dv; ++c) {
    float x = acc[c] * rescale;
    for (int64_t j = 0; j < rows; ++j) x += p[j] * v[j * dv + c];
    acc[c] = x;
  }
}

template <class T>
void partial_tasks(const AttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t group = a.q_heads / a.kv_heads, d = a.head_dim, dv = a.head_dim_v, stride = dv + 2;
  std::vector<float> qf, kf(kBlock * d), vf(kBlock * dv), scores;
  for (int64_t task = begin; task < end; ++task) {
    const int64_t split = task % a.splits, hk = (task / a.splits) % a.kv_heads, tile = task / (a.splits * a.kv_heads);
    const int64_t t0 = a.tiles[2 * tile], t1 = a.tiles[2 * tile + 1], rows = (t1 - t0) * group;
    // Rows r = (t - t0) * group + g: the tile's scaled queries, and the union of their key ranges.
    qf.resize(rows * d);
    scores.resize(rows * kBlock);
    int64_t lo = a.key_lo[t0], hi = a.key_hi[t0];
    for (int64_t t = t0; t < t1; ++t) {
      lo = std::min(lo, a.key_lo[t]);
      hi = std::max(hi, a.key_hi[t]);
      for (int64_t g = 0; g < group; ++g) {
        float* part = a.partial + (((t * a.q_heads) + hk * group + g) * a.splits + split) * stride;
        std::fill(part, part + dv, 0.f);
        part[dv] = kNegInf;  // running max
        part[dv + 1] = 0.f;  // running sum
        float* qr = qf.data() + ((t - t0) * group + g) * d;
        to_fp32(static_cast<const T*>(a.q) + t * a.q_token_stride + (hk * group + g) * a.q_head_stride, qr, d);
        for (int64_t i = 0; i < d; ++i) qr[i] *= a.sm_scale;
      }
    }
    const int64_t first = lo + split * a.split_keys, last = std::min(hi, first + a.split_keys);
    const int32_t* pages = a.block_table + a.query_req[t0] * a.block_table_stride;
    // Blocks of up to kBlock keys inside one page: their K and V rows are token_stride apart.
    auto attend_block = [&](int64_t k0, int64_t n, int64_t block, int64_t offset) {
      const T* k = static_cast<const T*>(a.k_cache) + block * a.k_block_stride + offset * a.k_token_stride +
                   hk * a.k_head_stride;
      const T* v = static_cast<const T*>(a.v_cache) + block * a.v_block_stride + offset * a.v_token_stride +
                   hk * a.v_head_stride;
      for (int64_t j = 0; j < n; ++j) {
        to_fp32(k + j * a.k_token_stride, kf.data() + j * d, d);
        to_fp32(v + j * a.v_token_stride, vf.data() + j * dv, dv);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t t = t0 + r / group;
        // This row's keys of the block: [j_lo, j_hi); the rest weigh nothing.
        const int64_t j_lo = std::clamp<int64_t>(a.key_lo[t] - k0, 0, n),
                      j_hi = std::clamp<int64_t>(a.key_hi[t] - k0, 0, n);
        if (j_lo >= j_hi) continue;
        float* s = scores.data() + r * kBlock;
        for (int64_t j = 0; j < kBlock; ++j)
          s[j] = j >= j_lo && j < j_hi ? dot(qf.data() + r * d, kf.data() + j * d, d) : kNegInf;
        // Online softmax: rescale what came before to the new max, then weigh this block's values.
        float* acc = a.partial + (((t * a.q_heads) + hk * group + r % group) * a.splits + split) * stride;
        const float m_old = acc[dv], m_new = std::max(m_old, reduce_max(vmax(load8(s), load8(s + kVec))));
        const float rescale = std::exp(m_old - m_new);  // exp(-inf) = 0 on the row's first block
        const f32x8 p0 = vexp(load8(s) - m_new), p1 = vexp(load8(s + kVec) - m_new);
        store8(s, p0);
        store8(s + kVec, p1);
        for (int64_t j = 0; j < kBlock; ++j)
          if (j < j_lo || j >= j_hi) s[j] = 0.f;  // vexp saturates: a masked key would weigh ~1e-38
        acc[dv] = m_new;
        acc[dv + 1] = acc[dv + 1] * rescale + reduce_add(load8(s) + load8(s + kVec));
        weigh_values(acc, rescale, s, vf.data(), n, dv);
      }
    };
    for_each_page_run(pages, a.page_size, first, last, kBlock, attend_block);
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
