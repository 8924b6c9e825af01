// Op entry points of deep-ep-ascend (CPU): check arguments, then run the kernels.
#pragma once

#include <optional>

#include "sgl_npu_core/checks.h"

namespace deep_ep {

using torch::stable::Tensor;

void get_dispatch_layout(const Tensor& topk_idx, int64_t num_experts, int64_t num_ranks, Tensor num_tokens_per_rank,
                         Tensor num_tokens_per_expert, Tensor is_token_in_rank);

void send_rows(const Tensor& is_token_in_rank, const std::optional<Tensor>& topk_idx,
               const std::optional<Tensor>& topk_weights, int64_t num_experts, Tensor send_token,
               const std::optional<Tensor>& idx_rows, const std::optional<Tensor>& weight_rows);

void low_latency_routes(const Tensor& topk_idx, const Tensor& counts, int64_t rank, int64_t slots, Tensor token,
                        Tensor source, Tensor dst_row, Tensor message_row, Tensor combine_row, Tensor per_rank,
                        Tensor recv_count, Tensor layout_range);

void low_latency_returns(const Tensor& layout_range, const Tensor& recv_slot, Tensor rows, Tensor returned,
                         Tensor per_source);

void copy_rows(const Tensor& src, const std::optional<Tensor>& src_rows, Tensor dst,
               const std::optional<Tensor>& dst_rows);

void reduce_rows(const Tensor& a, const Tensor& b, const Tensor& rows, const std::optional<Tensor>& weights,
                 const std::optional<Tensor>& bias, Tensor out);

void quantize_int8(const Tensor& x, Tensor q, Tensor scales);

void shm_barrier(Tensor flags, int64_t rank, int64_t epoch, double timeout_s, const Tensor& pids);

}  // namespace deep_ep
