#include <cstdint>

#include "kernels/kernels.h"
#include "ops/channel_param.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace sgl_npu_norm {

using namespace sgl_npu_core;

namespace {

// A [T, H, W] tensor whose last dim is contiguous (tokens and heads at any stride).
struct Heads {
  int64_t tokens, heads, width, token_stride, head_stride;
};

Heads as_heads(const Tensor& t, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 3, name, " must be [tokens, heads, head_dim], got ", t.dim(), " dims");
  STD_TORCH_CHECK(t.size(2) > 0, name, " must have a non-empty head_dim");
  STD_TORCH_CHECK(t.stride(2) == 1 || t.size(2) == 1, name, " must be contiguous in its last dim");
  return Heads{t.size(0), t.size(1), t.size(2), t.stride(0), t.stride(1)};
}

// cos or sin: [rows, >= width] float, last dim contiguous; returns the row stride.
int64_t check_table(const Tensor& t, int64_t width, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 2 && t.size(1) >= width, name, " must be [rows, >= ", width, "], got ", t.dim(),
                  " dims with last size ", t.dim() ? t.size(t.dim() - 1) : 0);
  STD_TORCH_CHECK(t.stride(1) == 1 || t.size(1) == 1, name, " must be contiguous in its last dim");
  return t.size(0) > 1 ? t.stride(0) : width;
}

void check_positions(const Tensor& p, int64_t tokens, int64_t rows) {
  check_cpu(p, "positions");
  STD_TORCH_CHECK(p.scalar_type() == ScalarType::Long || p.scalar_type() == ScalarType::Int,
                  "positions must be int32 or int64, got ", dtype_name(p.scalar_type()));
  STD_TORCH_CHECK(p.dim() == 1 && p.size(0) == tokens, "positions must have shape [", tokens, "]");
  check_contiguous(p, "positions");
  const bool is64 = p.scalar_type() == ScalarType::Long;
  for (int64_t t = 0; t < tokens; ++t) {
    const int64_t v =
        is64 ? static_cast<const int64_t*>(p.const_data_ptr())[t] : static_cast<const int32_t*>(p.const_data_ptr())[t];
    STD_TORCH_CHECK(0 <= v && v < rows, "positions[", t, "] = ", v, " is outside the cos/sin cache (", rows, " rows)");
  }
}

}  // namespace

void head_norm_rope(const std::optional<Tensor>& x, const std::optional<Tensor>& weight,
                    const std::optional<Tensor>& bias, double eps, bool gemma, bool norm,
                    const std::optional<Tensor>& rstd, const std::optional<Tensor>& cos,
                    const std::optional<Tensor>& sin, const std::optional<Tensor>& positions, int64_t rope_dim,
                    bool neox, bool full_width, Tensor out) {
  const Heads o = as_heads(out, "out");
  const Tensor& src = x.has_value() ? *x : out;  // no x: in place
  const Heads xi = x.has_value() ? as_heads(*x, "x") : o;
  STD_TORCH_CHECK(xi.tokens == o.tokens && xi.heads == o.heads && xi.width == o.width, "out must have the shape of x [",
                  xi.tokens, ", ", xi.heads, ", ", xi.width, "]");
  check_same_dtype(out, src, "out", "x");
  HeadNormRopeArgs a{};
  a.dtype = float_dtype(src, "x");
  a.heads = o.heads;
  a.width = o.width;
  a.x = src.const_data_ptr();
  a.x_token_stride = xi.token_stride;
  a.x_head_stride = xi.head_stride;
  a.out = out.mutable_data_ptr();
  a.out_token_stride = o.token_stride;
  a.out_head_stride = o.head_stride;

  STD_TORCH_CHECK(eps >= 0, "eps must be >= 0, got ", eps);
  a.norm = norm;
  a.eps = float(eps);
  // Per-head params are [head_dim]; with a given rstd (a norm across the whole width) they may be [H * head_dim].
  const int64_t param_size =
      weight.has_value() && weight->dim() == 1 && weight->size(0) == o.heads * o.width && rstd.has_value()
          ? o.heads * o.width
          : o.width;
  a.param_head_stride = param_size == o.width ? 0 : o.width;
  ChannelParam w(norm ? weight : std::nullopt, param_size, "weight", gemma ? 1.f : 0.f);
  ChannelParam b(norm ? bias : std::nullopt, param_size, "bias");
  a.weight = w.get();
  a.bias = b.get();
  if (rstd.has_value()) {
    STD_TORCH_CHECK(norm, "rstd needs norm=True");
    check_cpu(*rstd, "rstd");
    check_dtype(*rstd, ScalarType::Float, "rstd");
    STD_TORCH_CHECK(rstd->dim() == 1 && rstd->size(0) == o.tokens, "rstd must have shape [", o.tokens, "]");
    check_contiguous(*rstd, "rstd");
    a.rstd = static_cast<const float*>(rstd->const_data_ptr());
  }

  STD_TORCH_CHECK(rope_dim >= 0 && rope_dim % 2 == 0 && rope_dim <= o.width, "rope_dim must be even and in [0, ",
                  o.width, "], got ", rope_dim);
  a.rope_dim = rope_dim;
  a.neox = neox;
  a.full_width = neox && full_width;
  a.table_dtype = DType::f32;
  if (rope_dim > 0) {
    STD_TORCH_CHECK(cos.has_value() && sin.has_value(), "cos and sin are needed when rope_dim > 0");
    const int64_t width = a.full_width ? rope_dim : rope_dim / 2;
    const int64_t stride = check_table(*cos, width, "cos");
    STD_TORCH_CHECK(check_table(*sin, width, "sin") == stride && sin->size(0) == cos->size(0),
                    "sin must have the rows and row stride of cos");
    check_same_dtype(*sin, *cos, "sin", "cos");
    a.table_dtype = float_dtype(*cos, "cos");
    a.cos = cos->const_data_ptr();
    a.sin = sin->const_data_ptr();
    a.table_stride = stride;
    if (positions.has_value()) {
      check_positions(*positions, o.tokens, cos->size(0));
      a.positions = positions->const_data_ptr();
      a.positions_int64 = positions->scalar_type() == ScalarType::Long;
    } else {
      STD_TORCH_CHECK(cos->size(0) >= o.tokens, "cos must have a row per token (", o.tokens, "), got ", cos->size(0));
    }
  }
  const int64_t elem = a.dtype == DType::f32 ? 4 : 2;
  parallel_rows(o.tokens, 2 * elem * o.heads * o.width,
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(head_norm_rope_tokens, a, begin, end); });
}

}  // namespace sgl_npu_norm
