#include <cmath>
#include <cstring>

#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm {

using namespace sgl_npu_core;

namespace {

// Checks a gated input [..., 2d] and its output [..., d] (apart from x: rows written early would be read as
// input later); returns (input rows, output rows).
std::pair<Rows, Rows> glu_rows_checked(const Tensor& x, const Tensor& out, ScalarType out_dtype, const char* out_name) {
  float_dtype(x, "x");  // first: an int x is named, not its output's dtype
  Rows xr = as_rows(x, "x");
  STD_TORCH_CHECK(xr.cols % 2 == 0, "x must have an even last dim (gate and up halves), got ", xr.cols);
  Rows orow = as_rows(out, out_name);
  STD_TORCH_CHECK(orow.rows == xr.rows && orow.cols == xr.cols / 2, out_name, " must have ", xr.rows, " rows of ",
                  xr.cols / 2, ", got ", orow.rows, " x ", orow.cols);
  check_dtype(out, out_dtype, out_name);
  check_apart(out, x, out_name, "x");
  return {xr, orow};
}

void run_glu(const Tensor& x, Tensor out, GluKind kind, float alpha, float limit) {
  check_cpu(x, "x");  // before its dtype is read below
  auto [xr, orow] = glu_rows_checked(x, out, x.scalar_type(), "out");
  const int64_t elem = int64_t(out.element_size());
  GluArgs a{};
  a.dtype = float_dtype(x, "x");
  a.kind = kind;
  a.d = orow.cols;
  a.alpha = alpha;
  a.limit = limit;
  a.x = x.const_data_ptr();
  a.x_stride = xr.row_stride;
  a.out = out.mutable_data_ptr();
  a.out_stride = orow.row_stride;
  a.stream = should_stream(a.out, orow.rows, elem * orow.cols, elem * orow.row_stride);
  parallel_rows(xr.rows, 3 * int64_t(x.element_size()) * orow.cols,
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(glu_rows, a, begin, end); });
}

// Rows of x to compute: the total of group_list (type 1: counts; type 0: cumulative counts).
int64_t grouped_rows(const Tensor& group_list, int64_t group_list_type, int64_t rows) {
  check_cpu(group_list, "group_list");
  STD_TORCH_CHECK(group_list.dim() == 1 && group_list.size(0) > 0, "group_list must be a non-empty 1-D tensor");
  STD_TORCH_CHECK(group_list_type == 0 || group_list_type == 1,
                  "group_list_type must be 0 (cumulative) or 1 (counts), got ", group_list_type);
  ScalarType st = group_list.scalar_type();
  STD_TORCH_CHECK(st == ScalarType::Int || st == ScalarType::Long, "group_list must be int32 or int64, got ",
                  dtype_name(st));
  const int64_t n = group_list.size(0), stride = group_list.stride(0);
  int64_t total = 0, prev = 0;
  for (int64_t e = 0; e < n; ++e) {
    int64_t v = st == ScalarType::Int ? static_cast<const int32_t*>(group_list.const_data_ptr())[e * stride]
                                      : static_cast<const int64_t*>(group_list.const_data_ptr())[e * stride];
    if (group_list_type == 1) {
      STD_TORCH_CHECK(v >= 0, "group_list counts must be >= 0, got ", v, " at ", e);
      // compared before the sum, which could wrap past INT64_MAX to a count that passes the check below
      STD_TORCH_CHECK(v <= rows - total, "group_list sums to more rows (", total, " + ", v, ") than x has (", rows,
                      ")");
      total += v;
    } else {
      STD_TORCH_CHECK(v >= prev, "group_list (cumulative) must be non-decreasing, got ", v, " after ", prev);
      prev = total = v;
    }
    STD_TORCH_CHECK(total <= rows, "group_list sums to more rows (", total, "+) than x has (", rows, ")");
  }
  return total;
}

}  // namespace

void silu_and_mul(const Tensor& x, Tensor out) { run_glu(x, out, GluKind::silu_and_mul, 0.f, 0.f); }

void swiglu_oai(const Tensor& x, double alpha, double limit, Tensor out) {
  STD_TORCH_CHECK(limit > 0, "limit must be > 0, got ", limit);
  STD_TORCH_CHECK(std::isfinite(alpha), "alpha must be finite, got ", alpha);
  run_glu(x, out, GluKind::swiglu_oai, float(alpha), float(limit));
}

void swiglu_quant(const Tensor& x, const std::optional<Tensor>& group_list, int64_t group_list_type, bool do_limit,
                  double limit, Tensor q, Tensor scale) {
  check_cpu(x, "x");  // before glu_rows_checked reads its dtype
  auto [xr, qr] = glu_rows_checked(x, q, ScalarType::Char, "q");
  check_cpu(scale, "scale");
  check_dtype(scale, ScalarType::Float, "scale");
  check_contiguous(scale, "scale");
  STD_TORCH_CHECK(scale.numel() == xr.rows, "scale must have ", xr.rows, " elements (one per row), got ",
                  scale.numel());
  check_apart(scale, x, "scale", "x");
  check_apart(scale, q, "scale", "q");
  STD_TORCH_CHECK(!do_limit || limit > 0, "limit must be > 0, got ", limit);
  const int64_t rows = group_list.has_value() ? grouped_rows(*group_list, group_list_type, xr.rows) : xr.rows;
  SwigluQuantArgs a{float_dtype(x, "x"), qr.cols, do_limit, float(limit), x.const_data_ptr(), xr.row_stride,
                    static_cast<int8_t*>(q.mutable_data_ptr()), qr.row_stride,
                    static_cast<float*>(scale.mutable_data_ptr()),
                    // codes of 8 MB and more go around the caches, with no read-for-ownership of their lines
                    // (4096 x 7168, alternated in one process: 1.05-1.10x)
                    should_stream(q.mutable_data_ptr(), rows, qr.cols, qr.row_stride)};
  parallel_rows(rows, 3 * int64_t(x.element_size()) * qr.cols,
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(swiglu_quant_rows, a, begin, end); });
  // Rows past the groups are MoE padding: zero codes and zero scales.
  for (int64_t r = rows; r < xr.rows; ++r) std::memset(a.q + r * a.q_stride, 0, size_t(qr.cols));
  std::memset(a.scale + rows, 0, size_t(xr.rows - rows) * sizeof(float));
}

}  // namespace sgl_npu_norm
