// Op entry points of sgl-npu-attention (CPU): check arguments, then run the kernels.
#pragma once
#include <optional>

#include "sgl_npu_core/checks.h"

namespace sgl_npu_attention {

using torch::stable::Tensor;

void decode_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& seq_lens, double sm_scale, const std::optional<Tensor>& sinks,
                      int64_t sliding_window, Tensor out);
void extend_attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const Tensor& block_table,
                      const Tensor& cu_seqlens_q, const Tensor& seq_lens, double sm_scale, bool causal,
                      const std::optional<Tensor>& sinks, int64_t sliding_window, Tensor out);
void decode_mla(const Tensor& q, const Tensor& kv_nope_cache, const Tensor& kv_rope_cache, const Tensor& block_table,
                const Tensor& seq_lens, double sm_scale, Tensor out);
void lightning_indexer(const Tensor& q, const Tensor& k_cache, const Tensor& weights, const Tensor& block_table,
                       const Tensor& cu_seqlens_q, const Tensor& seq_lens, int64_t sparse_count, Tensor out);
void batch_matmul_transpose(const Tensor& a, const Tensor& b, Tensor out);
void mla_int8_matmul(const Tensor& codes, const Tensor& weight, const Tensor& descale, const Tensor& row_scale,
                     const std::optional<Tensor>& bias, Tensor out);
void mla_quant_rows(const Tensor& x, const std::optional<Tensor>& gamma, const std::optional<Tensor>& beta, double eps,
                    const std::optional<Tensor>& quant_scale, const std::optional<Tensor>& quant_offset, Tensor codes,
                    Tensor row_scale);
void mla_cache_write(const Tensor& latent, const Tensor& k_pe, const Tensor& gamma, const Tensor& cos,
                     const Tensor& sin, const Tensor& slotmapping, double eps, Tensor kv_cache, Tensor kv_cache_rope);

}  // namespace sgl_npu_attention
