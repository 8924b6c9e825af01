// The wheel's only registration file: schemas of torch.ops.sgl_npu_attention.* and their CPU kernels.
// Outputs are preallocated by the Python API (`out=`), so every op mutates its outputs and returns nothing.
#include <torch/csrc/stable/library.h>

#include "ops/ops.h"

STABLE_TORCH_LIBRARY(sgl_npu_attention, m) {
  m.def(
      "decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, Tensor seq_lens, "
      "float sm_scale, Tensor? sinks, int sliding_window, Tensor(a!) out) -> ()");
  m.def(
      "extend_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor block_table, Tensor cu_seqlens_q, "
      "Tensor seq_lens, float sm_scale, bool causal, Tensor? sinks, int sliding_window, Tensor(a!) out) -> ()");
  m.def(
      "decode_mla(Tensor q, Tensor kv_nope_cache, Tensor kv_rope_cache, Tensor block_table, Tensor seq_lens, "
      "float sm_scale, Tensor(a!) out) -> ()");
  m.def(
      "lightning_indexer(Tensor q, Tensor k_cache, Tensor weights, Tensor block_table, Tensor cu_seqlens_q, "
      "Tensor seq_lens, int sparse_count, Tensor(a!) out) -> ()");
  m.def("batch_matmul_transpose(Tensor a, Tensor b, Tensor(a!) out) -> ()");
  // mla_preprocess's row-wise stages (the Python op runs the GEMMs between them).
  m.def(
      "mla_quant_rows(Tensor x, Tensor? gamma, Tensor? beta, float eps, Tensor? quant_scale, Tensor? quant_offset, "
      "Tensor(a!) codes, Tensor(b!) row_scale) -> ()");
  m.def(
      "mla_int8_matmul(Tensor codes, Tensor weight, Tensor descale, Tensor row_scale, Tensor? bias, "
      "Tensor(a!) out) -> ()");
  m.def(
      "mla_cache_write(Tensor latent, Tensor k_pe, Tensor gamma, Tensor cos, Tensor sin, Tensor slotmapping, "
      "float eps, Tensor(a!) kv_cache, Tensor(b!) kv_cache_rope) -> ()");
}

STABLE_TORCH_LIBRARY_IMPL(sgl_npu_attention, CPU, m) {
  m.impl("decode_attention", TORCH_BOX(&sgl_npu_attention::decode_attention));
  m.impl("extend_attention", TORCH_BOX(&sgl_npu_attention::extend_attention));
  m.impl("decode_mla", TORCH_BOX(&sgl_npu_attention::decode_mla));
  m.impl("lightning_indexer", TORCH_BOX(&sgl_npu_attention::lightning_indexer));
  m.impl("batch_matmul_transpose", TORCH_BOX(&sgl_npu_attention::batch_matmul_transpose));
  m.impl("mla_quant_rows", TORCH_BOX(&sgl_npu_attention::mla_quant_rows));
  m.impl("mla_int8_matmul", TORCH_BOX(&sgl_npu_attention::mla_int8_matmul));
  m.impl("mla_cache_write", TORCH_BOX(&sgl_npu_attention::mla_cache_write));
}
