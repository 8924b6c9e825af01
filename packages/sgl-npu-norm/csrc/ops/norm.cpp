#include <utility>

#include "kernels/kernels.h"
#include "ops/channel_param.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"
#include "sgl_npu_core/vec.h"

namespace sgl_npu_norm {

using namespace sgl_npu_core;

namespace {

// The dtype weight and bias are read in: that of x where both have it (bf16 / fp16, not Gemma's 1 + w), else none
// (fp32 copies). See ChannelParam.
std::optional<DType> param_dtype(const Tensor& x, const Tensor& w, const std::optional<Tensor>& b, bool gemma) {
  check_cpu(w, "weight");  // before its dtype is read
  const ScalarType t = x.scalar_type();
  const bool same = !gemma && t != ScalarType::Float && w.scalar_type() == t && (!b || b->scalar_type() == t);
  return same ? std::optional<DType>(float_dtype(x, "x")) : std::nullopt;
}

// Fills the parts of NormArgs shared by every RMSNorm op and checks `out` against `x`.
struct NormCall {
  NormArgs args{};
  ChannelParam weight, bias, quant_scale, quant_offset;
  int64_t rows;
  std::pair<const Tensor*, const char*> params[4];  // the given per-channel parameters, read by every row

  NormCall(const Tensor& x, const Rows& xr, const Tensor& w, const std::optional<Tensor>& b, double eps, bool gemma,
           const std::optional<Tensor>& qs, const std::optional<Tensor>& qo, const Tensor& out)
      : weight(w, xr.cols, "weight", gemma ? 1.f : 0.f, float_dtype(x, "x"), param_dtype(x, w, b, gemma)),
        bias(b, xr.cols, "bias", 0.f, float_dtype(x, "x"), param_dtype(x, w, b, gemma)),
        quant_scale(qs, xr.cols, "quant_scale", 0.f, float_dtype(x, "x")),
        quant_offset(qo, xr.cols, "quant_offset", 0.f, float_dtype(x, "x")),
        rows(xr.rows),
        params{{&w, "weight"},
               {b ? &*b : nullptr, "bias"},
               {qs ? &*qs : nullptr, "quant_scale"},
               {qo ? &*qo : nullptr, "quant_offset"}} {
    STD_TORCH_CHECK(eps >= 0, "eps must be >= 0, got ", eps);
    STD_TORCH_CHECK(!qo.has_value() || qs.has_value(), "quant_offset needs quant_scale");
    Rows outr = as_rows(out, "out");
    check_same_rows(xr, outr, "x", "out");
    if (qs.has_value())
      check_dtype(out, ScalarType::Char, "out (quantized)");
    else
      check_same_dtype(out, x, "out", "x");
    params_apart_from(out, "out");
    args.dtype = float_dtype(x, "x");
    args.hidden = xr.cols;
    args.eps = float(eps);
    args.x = x.const_data_ptr();
    args.x_stride = xr.row_stride;
    args.weight = weight.get();
    args.bias = bias.get();
    args.weight_same = weight.same();
    args.bias_same = bias.same();
    args.quant_scale = quant_scale.get();
    args.quant_offset = quant_offset.get();
    args.out = out.mutable_data_ptr();
    args.out_stride = outr.row_stride;
    // Streaming only pays for a separate output: in place, the lines are already in cache.
    const int64_t elem = int64_t(out.element_size());
    args.stream =
        !qs.has_value() && args.out != args.x && should_stream(args.out, rows, elem * xr.cols, elem * outr.row_stride);
    args.ask_next_rows = rows * int64_t(x.element_size()) * xr.cols >= kStreamMinBytes;
  }

  // A written tensor must not hold a parameter: rows written early would change it for the rows after.
  void params_apart_from(const Tensor& written, const char* name) const {
    for (auto [p, p_name] : params)
      if (p) check_apart(written, *p, name, p_name);
  }

  void run() const {
    const int64_t elem = args.dtype == DType::f32 ? 4 : 2;
    parallel_rows(rows, 3 * elem * args.hidden,
                  [this](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(rmsnorm_rows, args, begin, end); });
  }
};

Rows residual_rows(const Tensor& x, const Rows& xr, const Tensor& residual, const char* name) {
  Rows rr = as_rows(residual, name);
  check_same_rows(xr, rr, "x", name);
  check_same_dtype(residual, x, name, "x");
  return rr;
}

}  // namespace

void rmsnorm(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, double eps, bool gemma,
             const std::optional<Tensor>& quant_scale, const std::optional<Tensor>& quant_offset, Tensor out) {
  Rows xr = as_rows(x, "x");
  NormCall call(x, xr, weight, bias, eps, gemma, quant_scale, quant_offset, out);
  check_same_or_apart(out, x, "out", "x");
  call.run();
}

void add_rmsnorm(const Tensor& x, const Tensor& residual, const Tensor& weight, const std::optional<Tensor>& bias,
                 double eps, bool gemma, const std::optional<Tensor>& quant_scale,
                 const std::optional<Tensor>& quant_offset, Tensor out, Tensor added) {
  Rows xr = as_rows(x, "x");
  Rows rr = residual_rows(x, xr, residual, "residual");
  Rows ar = residual_rows(x, xr, added, "added");
  NormCall call(x, xr, weight, bias, eps, gemma, quant_scale, quant_offset, out);
  // In place on x or residual is fine (each row is read before it is written); partly overlapping is not, nor are
  // out and added one memory.
  check_apart(out, added, "out", "added");
  call.params_apart_from(added, "added");
  for (auto [t, name] : {std::pair{&x, "x"}, {&residual, "residual"}}) {
    check_same_or_apart(out, *t, "out", name);
    check_same_or_apart(added, *t, "added", name);
  }
  call.args.residual = residual.const_data_ptr();
  call.args.residual_stride = rr.row_stride;
  call.args.sum = added.mutable_data_ptr();
  call.args.sum_stride = ar.row_stride;
  call.run();
}

void fused_add_rmsnorm(Tensor x, Tensor residual, const Tensor& weight, double eps, bool gemma) {
  Rows xr = as_rows(x, "x");
  Rows rr = residual_rows(x, xr, residual, "residual");
  check_apart(residual, x, "residual", "x");  // both are written
  NormCall call(x, xr, weight, std::nullopt, eps, gemma, std::nullopt, std::nullopt, x);
  call.params_apart_from(residual, "residual");
  call.args.residual = residual.const_data_ptr();
  call.args.residual_stride = rr.row_stride;
  call.args.sum = residual.mutable_data_ptr();
  call.args.sum_stride = rr.row_stride;
  call.run();
}

void split_sum_squares(const Tensor& x, int64_t width0, int64_t width1, Tensor out) {
  Rows xr = as_rows(x, "x");
  STD_TORCH_CHECK(width0 > 0 && width1 > 0 && width0 <= xr.cols && width1 <= xr.cols - width0,
                  "width0 and width1 must be > 0 and fit x's ", xr.cols, " columns together, got ", width0, " and ",
                  width1);
  check_cpu(out, "out");
  check_dtype(out, ScalarType::Float, "out");
  STD_TORCH_CHECK(out.dim() == 2 && out.size(0) == xr.rows && out.size(1) == 2, "out must have shape [", xr.rows,
                  ", 2]");
  check_contiguous(out, "out");
  check_apart(out, x, "out", "x");
  const int64_t widths[2] = {width0, width1};
  GroupSquaresArgs a{
      float_dtype(x, "x"), x.const_data_ptr(), xr.row_stride, widths, 2, static_cast<float*>(out.mutable_data_ptr())};
  parallel_rows(xr.rows, (width0 + width1) * int64_t(x.element_size()),
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(group_sum_squares_rows, a, begin, end); });
}

}  // namespace sgl_npu_norm
