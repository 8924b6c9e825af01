#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

using namespace sgl_npu_core;

namespace {

constexpr int64_t kBlock = 16;  // keys scored together: two vectors of softmax weights per query head
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <class T>
void to_fp32(const T* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) store8(dst + i, load8(src + i));
  for (; i < n; ++i) dst[i] = to_float(src[i]);
}

float dot(const float* a, const float* b, int64_t n) {
  f32x8 acc0 = splat(0.f), acc1 = splat(0.f);
  int64_t i = 0;
  for (; i + 2 * kVec <= n; i += 2 * kVec) {
    acc0 += load8(a + i) * load8(b + i);
    acc1 += load8(a + i + kVec) * load8(b + i + kVec);
  }
  float s = reduce_add(acc0 + acc1);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// acc[0, n) = acc * scale + p * v
void scale_add(float* acc, float scale, float p, const float* v, int64_t n) {
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) store8(acc + i, load8(acc + i) * scale + load8(v + i) * p);
  for (; i < n; ++i) acc[i] = acc[i] * scale + v[i] * p;
}

template <class T>
void partial_tasks(const DecodeArgs& a, int64_t begin, int64_t end) {
  const int64_t group = a.q_heads / a.kv_heads, d = a.head_dim, dv = a.head_dim_v, stride = dv + 2;
  // Per task scratch: the group's scaled queries, a block of K rows and one V row as fp32, scores.
  std::vector<float> qf(group * d), kf(kBlock * d), vf(dv), scores(group * kBlock);
  for (int64_t task = begin; task < end; ++task) {
    const int64_t split = task % a.splits, hk = (task / a.splits) % a.kv_heads, b = task / (a.splits * a.kv_heads);
    float* part = a.partial + task * group * stride;  // [group, Dv + 2]
    const int64_t len = a.seq_lens[b];
    const int64_t lo = a.sliding_window > 0 ? std::max<int64_t>(0, len - a.sliding_window) : 0;
    const int64_t first = lo + split * a.split_keys, last = std::min(len, first + a.split_keys);
    for (int64_t g = 0; g < group; ++g) {
      std::fill(part + g * stride, part + g * stride + dv, 0.f);
      part[g * stride + dv] = kNegInf;  // running max
      part[g * stride + dv + 1] = 0.f;  // running sum
      const T* q = static_cast<const T*>(a.q) + b * a.q_batch_stride + (hk * group + g) * a.q_head_stride;
      to_fp32(q, qf.data() + g * d, d);
      for (int64_t i = 0; i < d; ++i) qf[g * d + i] *= a.sm_scale;
    }
    const int32_t* pages = a.block_table + b * a.block_table_stride;
    auto row = [&](const void* cache, int64_t block_stride, int64_t token_stride, int64_t head_stride, int64_t t) {
      return static_cast<const T*>(cache) + pages[t / a.page_size] * block_stride + (t % a.page_size) * token_stride +
             hk * head_stride;
    };
    for (int64_t k0 = first; k0 < last; k0 += kBlock) {
      const int64_t n = std::min(kBlock, last - k0);
      for (int64_t j = 0; j < n; ++j)
        to_fp32(row(a.k_cache, a.k_block_stride, a.k_token_stride, a.k_head_stride, k0 + j), kf.data() + j * d, d);
      for (int64_t g = 0; g < group; ++g) {
        float* s = scores.data() + g * kBlock;
        for (int64_t j = 0; j < n; ++j) s[j] = dot(qf.data() + g * d, kf.data() + j * d, d);
        for (int64_t j = n; j < kBlock; ++j) s[j] = kNegInf;
        // Online softmax: rescale what came before to the new max, then weigh this block's keys.
        float* acc = part + g * stride;
        const float m_old = acc[dv], m_new = std::max(m_old, reduce_max(vmax(load8(s), load8(s + kVec))));
        const float rescale = std::exp(m_old - m_new);  // exp(-inf) = 0 on the first block
        const f32x8 p0 = vexp(load8(s) - m_new), p1 = vexp(load8(s + kVec) - m_new);
        store8(s, p0);
        store8(s + kVec, p1);
        acc[dv] = m_new;
        acc[dv + 1] = acc[dv + 1] * rescale + reduce_add(p0 + p1);
        for (int64_t i = 0; i < dv; ++i) acc[i] *= rescale;
      }
      for (int64_t j = 0; j < n; ++j) {
        to_fp32(row(a.v_cache, a.v_block_stride, a.v_token_stride, a.v_head_stride, k0 + j), vf.data(), dv);
        for (int64_t g = 0; g < group; ++g) scale_add(part + g * stride, 1.f, scores[g * kBlock + j], vf.data(), dv);
      }
    }
  }
}

template <class T>
void merge_rows(const DecodeArgs& a, int64_t begin, int64_t end) {
  const int64_t group = a.q_heads / a.kv_heads, dv = a.head_dim_v, stride = dv + 2;
  std::vector<float> acc(dv);
  for (int64_t r = begin; r < end; ++r) {  // r = b * Hq + h
    const int64_t b = r / a.q_heads, h = r % a.q_heads, hk = h / group, g = h % group;
    const float* parts = a.partial + ((b * a.kv_heads + hk) * a.splits * group + g) * stride;
    float m = a.sinks ? a.sinks[h] : kNegInf;
    for (int64_t s = 0; s < a.splits; ++s) m = std::max(m, parts[s * group * stride + dv]);
    float sum = a.sinks ? std::exp(a.sinks[h] - m) : 0.f;
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t s = 0; s < a.splits; ++s) {
      const float* p = parts + s * group * stride;
      if (p[dv] == kNegInf) continue;  // a split that saw no key
      const float w = std::exp(p[dv] - m);
      sum += p[dv + 1] * w;
      scale_add(acc.data(), 1.f, w, p, dv);
    }
    const float inv = sum > 0.f ? 1.f / sum : 0.f;  // no key and no sink: 0
    T* out = static_cast<T*>(a.out) + b * a.out_batch_stride + h * a.out_head_stride;
    int64_t i = 0;
    for (; i + kVec <= dv; i += kVec) store8(out + i, load8(acc.data() + i) * inv);
    for (; i < dv; ++i) out[i] = from_float<T>(acc[i] * inv);
  }
}

}  // namespace

void decode_partial(const DecodeArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { partial_tasks<scalar_t>(a, begin, end); });
}

void decode_merge(const DecodeArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { merge_rows<scalar_t>(a, begin, end); });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
