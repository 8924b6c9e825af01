// Op entry points of sgl-npu-norm (CPU): check arguments, then run the kernels over rows.
#pragma once
#include <optional>

#include "sgl_npu_core/checks.h"

namespace sgl_npu_norm {

using torch::stable::Tensor;

void rmsnorm(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, double eps, bool gemma,
             const std::optional<Tensor>& quant_scale, const std::optional<Tensor>& quant_offset, Tensor out);
void add_rmsnorm(const Tensor& x, const Tensor& residual, const Tensor& weight, const std::optional<Tensor>& bias,
                 double eps, bool gemma, const std::optional<Tensor>& quant_scale,
                 const std::optional<Tensor>& quant_offset, Tensor out, Tensor added);
void fused_add_rmsnorm(Tensor x, Tensor residual, const Tensor& weight, double eps, bool gemma);
// out [T, 2] fp32: per row of x, the sums of squares of columns [0, width0) and [width0, width0 + width1).
void split_sum_squares(const Tensor& x, int64_t width0, int64_t width1, Tensor out);

void silu_and_mul(const Tensor& x, Tensor out);
void swiglu_oai(const Tensor& x, double alpha, double limit, Tensor out);
void swiglu_quant(const Tensor& x, const std::optional<Tensor>& group_list, int64_t group_list_type, bool do_limit,
                  double limit, Tensor q, Tensor scale);

// Per-head RMSNorm + RoPE on x [T, H, W] into out (in place when x is None); see HeadNormRopeArgs. With out2, a
// second group of heads x2 [T, H2, W] (in place when x2 is None) with every other argument shared.
void head_norm_rope(const std::optional<Tensor>& x, const std::optional<Tensor>& weight,
                    const std::optional<Tensor>& bias, double eps, bool gemma, bool norm,
                    const std::optional<Tensor>& rstd, const std::optional<Tensor>& cos,
                    const std::optional<Tensor>& sin, const std::optional<Tensor>& positions, int64_t rope_dim,
                    bool neox, bool full_width, Tensor out, const std::optional<Tensor>& x2,
                    const std::optional<Tensor>& out2);
// The q and k heads of a fused qkv row through head_norm_rope, v (and the gate halves of [q | gate] heads)
// copied, in one pass over the tokens. whole_width: one RMSNorm over all the q heads (and one over the k heads) of a
// token, computed here; rstd [T, 2]: the same with given statistics (tensor parallelism).
void split_qkv_norm_rope(const Tensor& qkv, int64_t head_dim, int64_t q_heads, int64_t kv_heads, bool q_gate,
                         const std::optional<Tensor>& q_weight, const std::optional<Tensor>& k_weight,
                         const std::optional<Tensor>& q_bias, const std::optional<Tensor>& k_bias, double eps,
                         bool gemma, bool norm, const std::optional<Tensor>& rstd, bool whole_width,
                         const std::optional<Tensor>& cos, const std::optional<Tensor>& sin,
                         const std::optional<Tensor>& positions, int64_t rope_dim, bool neox, bool full_width, Tensor q,
                         Tensor k, Tensor v, const std::optional<Tensor>& gate);

// Multimodal RoPE's per-token table out [T, rope_dim] (rows [cos half | sin half]) from cos_sin [3, T, >= rope_dim]
// (the T, H and W positions' rows, any strides): frequency i from the axis its section names (contiguous sections t, h,
// w; or interleaved: i % 3 == 1 below 3h from H, i % 3 == 2 below 3w from W, the rest from T).
void mrope_tables(const Tensor& cos_sin, int64_t section_t, int64_t section_h, int64_t section_w, bool interleaved,
                  Tensor out);

}  // namespace sgl_npu_norm
