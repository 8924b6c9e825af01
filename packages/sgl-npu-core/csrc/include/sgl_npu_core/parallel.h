// Row-parallel loop on torch's own thread pool (no second OpenMP runtime in the process).
#pragma once
#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cstdint>

namespace sgl_npu_core {

// Runs body(begin, end) over [0, rows), splitting only when each piece moves at least ~256 KiB:
// below that the fork/join costs more than it saves.
template <class F>
inline void parallel_rows(int64_t rows, int64_t bytes_per_row, const F& body) {
  if (rows <= 0) return;
  constexpr int64_t kMinBytesPerTask = 256 << 10;
  const int64_t grain = std::max<int64_t>(1, kMinBytesPerTask / std::max<int64_t>(bytes_per_row, 1));
  if (rows <= grain) {
    body(int64_t(0), rows);
    return;
  }
  torch::stable::parallel_for(0, rows, grain, body);
}

}  // namespace sgl_npu_core
