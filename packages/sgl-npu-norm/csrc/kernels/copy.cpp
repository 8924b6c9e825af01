#include <cstring>

#include "kernels/kernels.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm::SGL_NPU_ISA {

using namespace sgl_npu_core;

void copy_row_pieces(const RowPiecesArgs& a, int64_t begin, int64_t end) {
  for (int64_t t = begin; t < end; ++t)
    for (int64_t i = 0; i < a.count; ++i) {
      const char* src = a.src + t * a.src_row + i * a.src_step;
      char* dst = a.dst + t * a.dst_row + i * a.bytes;
      if (a.ask_next && t + 1 < end) prefetch_bytes(src + a.src_row, a.bytes);
      if (a.stream)
        copy_stream(dst, src, a.bytes);
      else
        std::memcpy(dst, src, size_t(a.bytes));
    }
}

}  // namespace sgl_npu_norm::SGL_NPU_ISA
