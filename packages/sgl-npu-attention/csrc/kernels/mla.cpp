#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/paged.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

namespace {

constexpr int64_t kKeys = 32;  // keys per block
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A task (request, split) holds the query transposed, Q^T [d][heads] scaled by sm_scale, and per block of keys:
//   S^T [keys][heads] = K Q^T      (key rows broadcast against 16 heads at a time)
//   online softmax along each head's column, 8 heads per vector
//   O [heads][dl] = O * rescale + P V with V = the keys' latent part (the P^T columns broadcast against V rows)
// Heads are padded to a multiple of 16 in Q^T and S^T (zero columns), key rows to a multiple of 16 floats.
template <class T>
void mla_tasks(const AttentionArgs& a, int64_t begin, int64_t end) {
  const int64_t hq = a.q_heads, d = a.head_dim, dl = a.head_dim_v, stride = dl + 2;
  const int64_t hp = round_up(hq, kTileCols), kd = round_up(d, kTileCols), head_stride = a.splits * stride;
  std::vector<float> qt(d * hp, 0.f), keys(kKeys * kd, 0.f), st(kKeys * hp), m(hp), l(hp), rescale(hp);
  const KeyPart parts[2] = {{a.k_cache, a.k_block_stride, a.k_token_stride, dl},
                            {a.k_rope_cache, a.k_rope_block_stride, a.k_rope_token_stride, d - dl}};
  for (int64_t task = begin; task < end; ++task) {
    const int64_t split = task % a.splits, t = a.tiles[2 * (task / a.splits)];
    const T* q = static_cast<const T*>(a.q) + t * a.q_token_stride;
    for (int64_t h = 0; h < hq; ++h)
      for (int64_t i = 0; i < d; ++i) qt[i * hp + h] = to_float(q[h * a.q_head_stride + i]) * a.sm_scale;
    float* out = a.partial + (t * hq * a.splits + split) * stride;  // head h's row: out + h * head_stride
    for (int64_t h = 0; h < hq; ++h) std::fill(out + h * head_stride, out + h * head_stride + dl, 0.f);
    std::fill(m.begin(), m.end(), kNegInf);
    std::fill(l.begin(), l.end(), 0.f);
    const int64_t first = a.key_lo[t] + split * a.split_keys, last = std::min(a.key_hi[t], first + a.split_keys);
    const int32_t* pages = a.block_table + a.query_req[t] * a.block_table_stride;
    for (int64_t k0 = first; k0 < last; k0 += kKeys) {
      const int64_t n = std::min(kKeys, last - k0);
      load_keys<T>(pages, a.page_size, k0, n, parts, 2, keys.data(), kd);
      for (int64_t j = 0; j < n; j += kTileRows)
        for (int64_t h = 0; h < hp; h += kTileCols)
          tile16_rows(std::min(kTileRows, n - j), keys.data() + j * kd, kd, 1, d, qt.data() + h, hp,
                      st.data() + j * hp + h, hp, kTileCols, nullptr);
      for (int64_t h = 0; h < hp; h += kVec) {
        const f32x8 m_old = load8(m.data() + h);
        f32x8 m_new = m_old;
        for (int64_t j = 0; j < n; ++j) m_new = vmax(m_new, load8(st.data() + j * hp + h));
        const f32x8 sum = exp_shifted_sum(st.data() + h, hp, n, m_new);
        const f32x8 r = vexp(m_old - m_new);  // ~1e-38 on the first block, where O and l are still 0
        store8(rescale.data() + h, r);
        store8(l.data() + h, load8(l.data() + h) * r + sum);
        store8(m.data() + h, m_new);
      }
      for (int64_t h = 0; h < hq; h += kTileRows)
        for (int64_t c = 0; c < dl; c += kTileCols)
          tile16_rows(std::min(kTileRows, hq - h), st.data() + h, 1, hp, n, keys.data() + c, kd,
                      out + h * head_stride + c, head_stride, std::min(kTileCols, dl - c), rescale.data() + h);
    }
    for (int64_t h = 0; h < hq; ++h) {
      out[h * head_stride + dl] = m[h];
      out[h * head_stride + dl + 1] = l[h];
    }
  }
}

}  // namespace

void mla_partial(const AttentionArgs& a, int64_t begin, int64_t end) {
  SGL_NPU_DISPATCH_FLOAT(a.dtype, [&] { mla_tasks<scalar_t>(a, begin, end); });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
