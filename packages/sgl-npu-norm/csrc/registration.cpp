// The wheel's only registration file: schemas of torch.ops.sgl_npu_norm.* and their CPU kernels.
// Outputs are preallocated by the Python API (`out=`), so every op mutates its outputs and returns nothing.
#include <torch/csrc/stable/library.h>

#include "ops/ops.h"

STABLE_TORCH_LIBRARY(sgl_npu_norm, m) {
  m.def(
      "rmsnorm(Tensor x, Tensor weight, Tensor? bias, float eps, bool gemma, Tensor? quant_scale, "
      "Tensor? quant_offset, Tensor(a!) out) -> ()");
  m.def(
      "add_rmsnorm(Tensor x, Tensor residual, Tensor weight, Tensor? bias, float eps, bool gemma, "
      "Tensor? quant_scale, Tensor? quant_offset, Tensor(a!) out, Tensor(b!) added) -> ()");
  m.def("fused_add_rmsnorm(Tensor(a!) x, Tensor(b!) residual, Tensor weight, float eps, bool gemma) -> ()");
  m.def("split_sum_squares(Tensor x, int width0, int width1, Tensor(a!) out) -> ()");
  m.def("silu_and_mul(Tensor x, Tensor(a!) out) -> ()");
  m.def("swiglu_oai(Tensor x, float alpha, float limit, Tensor(a!) out) -> ()");
  m.def(
      "swiglu_quant(Tensor x, Tensor? group_list, int group_list_type, bool do_limit, float limit, "
      "Tensor(a!) q, Tensor(b!) scale) -> ()");
  m.def(
      "head_norm_rope(Tensor? x, Tensor? weight, Tensor? bias, float eps, bool gemma, bool norm, Tensor? rstd, "
      "Tensor? cos, Tensor? sin, Tensor? positions, int rope_dim, bool neox, bool full_width, Tensor(a!) out, "
      "Tensor? x2=None, Tensor(b!)? out2=None) -> ()");
  m.def(
      "split_qkv_norm_rope(Tensor qkv, int head_dim, int q_heads, int kv_heads, bool q_gate, Tensor? q_weight, "
      "Tensor? k_weight, Tensor? q_bias, Tensor? k_bias, float eps, bool gemma, bool norm, Tensor? rstd, "
      "bool whole_width, Tensor? cos, Tensor? sin, Tensor? positions, int rope_dim, bool neox, bool full_width, "
      "Tensor(a!) q, Tensor(b!) k, Tensor(c!) v, Tensor(d!)? gate) -> ()");
  m.def(
      "mrope_tables(Tensor cos_sin, int section_t, int section_h, int section_w, bool interleaved, Tensor(a!) out) "
      "-> ()");
}

STABLE_TORCH_LIBRARY_IMPL(sgl_npu_norm, CPU, m) {
  m.impl("rmsnorm", TORCH_BOX(&sgl_npu_norm::rmsnorm));
  m.impl("add_rmsnorm", TORCH_BOX(&sgl_npu_norm::add_rmsnorm));
  m.impl("fused_add_rmsnorm", TORCH_BOX(&sgl_npu_norm::fused_add_rmsnorm));
  m.impl("split_sum_squares", TORCH_BOX(&sgl_npu_norm::split_sum_squares));
  m.impl("silu_and_mul", TORCH_BOX(&sgl_npu_norm::silu_and_mul));
  m.impl("swiglu_oai", TORCH_BOX(&sgl_npu_norm::swiglu_oai));
  m.impl("swiglu_quant", TORCH_BOX(&sgl_npu_norm::swiglu_quant));
  m.impl("head_norm_rope", TORCH_BOX(&sgl_npu_norm::head_norm_rope));
  m.impl("split_qkv_norm_rope", TORCH_BOX(&sgl_npu_norm::split_qkv_norm_rope));
  m.impl("mrope_tables", TORCH_BOX(&sgl_npu_norm::mrope_tables));
}
