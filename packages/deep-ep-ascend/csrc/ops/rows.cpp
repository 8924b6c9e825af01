// Row movement of dispatch and combine: gather/scatter copies (into peers' shared memory) and the fixed-order
// weighted sum of combine. Every index is checked before any row is touched.
#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace deep_ep {

using namespace sgl_npu_core;

namespace {

// A 2-D uint8 tensor (any rows viewed as bytes) whose rows are contiguous: rows, row size and row stride.
struct ByteMatrix {
  int64_t rows, bytes, stride;
};

ByteMatrix byte_matrix(const Tensor& t, const char* name) {
  check_cpu(t, name);
  check_dtype(t, ScalarType::Byte, name);
  STD_TORCH_CHECK(t.dim() == 2, name, " must be 2-D [rows, bytes], got ", t.dim(), " dims");
  check_last_dim_contiguous(t, name);
  const int64_t stride = t.size(0) > 1 ? t.stride(0) : t.size(1);
  STD_TORCH_CHECK(stride >= t.size(1), name, " has overlapping rows (stride ", stride, ")");
  return {t.size(0), t.size(1), stride};
}

// A 1-D int64 index of `n` entries, each in [0, limit).
const int64_t* checked_index(const std::optional<Tensor>& idx, int64_t n, int64_t limit, const char* name) {
  if (!idx.has_value()) {
    STD_TORCH_CHECK(n <= limit, name, " is absent, so the ", n, " rows must fit in ", limit);
    return nullptr;
  }
  const int64_t* p = checked_vector<int64_t>(*idx, n, ScalarType::Long, name);
  for (int64_t i = 0; i < n; ++i)
    STD_TORCH_CHECK(0 <= p[i] && p[i] < limit, name, "[", i, "] = ", p[i], " is outside [0, ", limit, ")");
  return p;
}

}  // namespace

void copy_rows(const Tensor& src, const std::optional<Tensor>& src_rows, Tensor dst,
               const std::optional<Tensor>& dst_rows) {
  const ByteMatrix s = byte_matrix(src, "src"), d = byte_matrix(dst, "dst");
  STD_TORCH_CHECK(s.bytes == d.bytes, "src rows have ", s.bytes, " bytes but dst rows ", d.bytes);
  int64_t n = s.rows;
  if (src_rows.has_value())
    n = src_rows->numel();
  else if (dst_rows.has_value())
    n = dst_rows->numel();
  check_written_apart({{&dst, "dst"}}, {{given(src_rows), "src_rows"}, {given(dst_rows), "dst_rows"}});
  CopyRowsArgs a{src.const_data_ptr(),
                 dst.mutable_data_ptr(),
                 checked_index(src_rows, n, s.rows, "src_rows"),
                 checked_index(dst_rows, n, d.rows, "dst_rows"),
                 n,
                 s.bytes,
                 s.stride,
                 d.stride};
  parallel_rows(n, s.bytes, [&](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(copy_rows, a, begin, end); });
}

void reduce_rows(const Tensor& a, const Tensor& b, const Tensor& rows, const std::optional<Tensor>& weights,
                 const std::optional<Tensor>& bias, Tensor out) {
  const Rows ro = as_rows(out, "out");
  const DType dtype = float_dtype(a, "a");
  check_same_dtype(b, a, "b", "a");
  const bool out_fp32 = out.scalar_type() == ScalarType::Float;
  STD_TORCH_CHECK(out_fp32 || out.scalar_type() == a.scalar_type(), "out must be float32 or have a's dtype (",
                  dtype_name(a.scalar_type()), "), got ", dtype_name(out.scalar_type()));
  STD_TORCH_CHECK(out.dim() == 2 && b.dim() == 2, "b and out must be 2-D");
  // A 1-D `a` (a flat view of shared memory) is read at element offsets: a row may start anywhere in it.
  const bool flat = a.dim() == 1;
  STD_TORCH_CHECK(flat || a.dim() == 2, "a must be 1-D (rows at element offsets) or 2-D");
  STD_TORCH_CHECK(!flat || b.size(0) == 0, "b must be empty when a is 1-D");
  const Rows ra = flat ? Rows{a.numel(), ro.cols, 1} : as_rows(a, "a");
  if (flat) check_contiguous(a, "a");
  const Rows rb = b.size(0) == 0 ? Rows{0, ro.cols, ro.cols} : as_rows(b, "b");
  STD_TORCH_CHECK(ra.cols == ro.cols && rb.cols == ro.cols, "a and b rows must have the ", ro.cols, " columns of out");
  check_cpu(rows, "rows");
  check_dtype(rows, ScalarType::Long, "rows");
  STD_TORCH_CHECK(rows.dim() == 2 && rows.size(0) == ro.rows && rows.is_contiguous(), "rows must be a contiguous [",
                  ro.rows, ", slots]");
  const int64_t slots = rows.size(1), limit = flat ? a.numel() - ro.cols + 1 : a.size(0) + b.size(0);
  const int64_t* r = static_cast<const int64_t*>(rows.const_data_ptr());
  for (int64_t i = 0; i < rows.numel(); ++i)
    STD_TORCH_CHECK(-1 <= r[i] && r[i] < limit, "rows[", i / slots, ", ", i % slots, "] = ", r[i],
                    flat ? " does not start a row inside a (" : " is not a row of a or b (", limit, ") or -1");
  const float* w = nullptr;
  if (weights.has_value()) {
    check_cpu(*weights, "weights");
    check_dtype(*weights, ScalarType::Float, "weights");
    STD_TORCH_CHECK(
        weights->dim() == 2 && weights->size(0) == ro.rows && weights->size(1) == slots && weights->is_contiguous(),
        "weights must be a contiguous [", ro.rows, ", ", slots, "]");
    w = static_cast<const float*>(weights->const_data_ptr());
  }
  const float* bias_ptr = nullptr;
  int64_t bias_stride = 0;
  if (bias.has_value()) {
    const Rows rbias = as_rows(*bias, "bias");
    check_dtype(*bias, ScalarType::Float, "bias");
    check_same_rows(ro, rbias, "out", "bias");
    bias_ptr = static_cast<const float*>(bias->const_data_ptr());
    bias_stride = rbias.row_stride;
  }
  check_written_apart({{&out, "out"}}, {{&rows, "rows"}, {given(weights), "weights"}, {given(bias), "bias"}});
  ReduceRowsArgs args{dtype,
                      out_fp32,
                      a.const_data_ptr(),
                      b.const_data_ptr(),
                      out.mutable_data_ptr(),
                      r,
                      w,
                      bias_ptr,
                      ro.rows,
                      slots,
                      ro.cols,
                      ra.rows,
                      ra.row_stride,
                      rb.row_stride,
                      ro.row_stride,
                      bias_stride};
  const int64_t row_bytes = ro.cols * int64_t(out.element_size());
  parallel_rows(ro.rows, row_bytes * (slots + 1),
                [&](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(reduce_rows, args, begin, end); });
}

void quantize_int8(const Tensor& x, Tensor q, Tensor scales) {
  const Rows rx = as_rows(x, "x"), rq = as_rows(q, "q");
  const DType dtype = float_dtype(x, "x");
  check_dtype(q, ScalarType::Char, "q");
  check_same_rows(rx, rq, "x", "q");
  float* s = const_cast<float*>(checked_vector<float>(scales, rx.rows, ScalarType::Float, "scales"));
  QuantizeInt8Args a{dtype,         x.const_data_ptr(), static_cast<int8_t*>(q.mutable_data_ptr()), s, rx.rows, rx.cols,
                     rx.row_stride, rq.row_stride};
  parallel_rows(rx.rows, rx.cols * int64_t(x.element_size() + 1),
                [&](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(quantize_int8, a, begin, end); });
}

}  // namespace deep_ep
