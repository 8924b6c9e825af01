#include <algorithm>

#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace sgl_npu_attention {

using namespace sgl_npu_core;

namespace {

// A task's fp32 copies of its A and output rows stay within L2; short problems are cut finer so that every core
// gets work.
constexpr int64_t kRowBlockBytes = 256 << 10, kMinTasks = 16;

void check_3d(const Tensor& t, const char* name, const char* shape) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 3, name, " must be ", shape, ", got ", t.dim(), " dims");
  check_last_dim_contiguous(t, name);
}

}  // namespace

void batch_matmul_transpose(const Tensor& a, const Tensor& b, Tensor out) {
  check_3d(a, "a", "[M, B, K]");
  check_3d(b, "b", "[B, K, N]");
  check_3d(out, "out", "[M, B, N]");
  BmmArgs p{};
  p.dtype = float_dtype(a, "a");
  check_same_dtype(b, a, "b", "a");
  check_same_dtype(out, a, "out", "a");
  p.m = a.size(0);
  p.heads = a.size(1);
  p.k = a.size(2);
  p.n = b.size(2);
  STD_TORCH_CHECK(b.size(0) == p.heads && b.size(1) == p.k, "b must be [", p.heads, ", ", p.k,
                  ", N] to match a [M, B, K], got [", b.size(0), ", ", b.size(1), ", ", b.size(2), "]");
  STD_TORCH_CHECK(out.size(0) == p.m && out.size(1) == p.heads && out.size(2) == p.n, "out must have shape [", p.m,
                  ", ", p.heads, ", ", p.n, "]");
  if (p.m == 0 || p.heads == 0 || p.n == 0) return;
  // Tasks write their own rows of out while every task reads a and b.
  check_disjoint(out, "out");
  check_apart(out, a, "out", "a");
  check_apart(out, b, "out", "b");
  const int64_t per_head = (kMinTasks + p.heads - 1) / p.heads;  // blocks per head for kMinTasks tasks
  p.m_block = std::clamp<int64_t>(kRowBlockBytes / (4 * (p.k + p.n + 16)), 6, 1024);
  p.m_block = std::max<int64_t>(1, std::min(p.m_block, (p.m + per_head - 1) / per_head));
  p.a = a.const_data_ptr();
  p.a_stride0 = a.stride(0);
  p.a_stride1 = a.stride(1);
  p.b = b.const_data_ptr();
  p.b_stride0 = b.stride(0);
  p.b_stride1 = b.stride(1);
  p.out = out.mutable_data_ptr();
  p.out_stride0 = out.stride(0);
  p.out_stride1 = out.stride(1);
  const int64_t tasks = p.heads * ((p.m + p.m_block - 1) / p.m_block);
  const int64_t elem = p.dtype == DType::f32 ? 4 : 2;
  parallel_rows(tasks, (p.m_block + p.n) * p.k * elem,
                [&p](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(batch_matmul, p, begin, end); });
}

}  // namespace sgl_npu_attention
