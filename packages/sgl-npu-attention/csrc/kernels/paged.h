// Walking a request's keys through its block-table row, shared by the paged kernels. Inside the ISA namespace.
#pragma once
#include <algorithm>
#include <cstdint>

#include "kernels/tile.h"

namespace sgl_npu_attention::SGL_NPU_ISA {

// Calls fn(k0, n, block, offset) for runs of keys [k0, k0 + n) within [first, last) that share a page (block id
// `block`, first key at `offset` in it) and hold at most max_n keys. Block ids were checked by the op.
template <class F>
inline void for_each_page_run(const int32_t* pages, int64_t page_size, int64_t first, int64_t last, int64_t max_n,
                              F&& fn) {
  for (int64_t k0 = first, n = 0; k0 < last; k0 += n) {
    const int64_t offset = k0 % page_size;
    n = std::min({max_n, last - k0, page_size - offset});
    fn(k0, n, int64_t(pages[k0 / page_size]), offset);
  }
}

// One paged cache [blocks, page_size, 1, dim] (a key's row may be split over two caches: MLA's latent and rope parts).
struct KeyPart {
  const void* cache;
  int64_t block_stride, token_stride, dim;
};

// Keys [k0, k0 + n) of a request as fp32 rows `row_stride` apart: each row the concatenation of the parts' rows.
template <class T>
inline void load_keys(const int32_t* pages, int64_t page_size, int64_t k0, int64_t n, const KeyPart* parts,
                      int num_parts, float* rows, int64_t row_stride) {
  for_each_page_run(pages, page_size, k0, k0 + n, n, [&](int64_t first, int64_t count, int64_t block, int64_t offset) {
    float* dst = rows + (first - k0) * row_stride;
    for (int64_t j = 0; j < count; ++j, dst += row_stride) {
      int64_t col = 0;
      for (int p = 0; p < num_parts; ++p) {
        const KeyPart& part = parts[p];
        const T* src = static_cast<const T*>(part.cache) + block * part.block_stride + (offset + j) * part.token_stride;
        to_fp32(src, dst + col, part.dim);
        col += part.dim;
      }
    }
  });
}

}  // namespace sgl_npu_attention::SGL_NPU_ISA
