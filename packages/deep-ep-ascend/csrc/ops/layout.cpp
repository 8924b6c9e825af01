#include <vector>

#include "kernels/kernels.h"
#include "ops/ops.h"

namespace deep_ep {

using namespace sgl_npu_core;

namespace {

// topk_idx as int64 or int32 [N, K] with every entry in [-1, num_experts); returns whether it is int64.
bool check_topk_idx(const Tensor& topk_idx, int64_t num_experts) {
  check_cpu(topk_idx, "topk_idx");
  STD_TORCH_CHECK(topk_idx.dim() == 2, "topk_idx must be [tokens, topk], got ", topk_idx.dim(), " dims");
  const bool is64 = topk_idx.scalar_type() == ScalarType::Long;
  STD_TORCH_CHECK(is64 || topk_idx.scalar_type() == ScalarType::Int, "topk_idx must be int64 or int32, got ",
                  dtype_name(topk_idx.scalar_type()));
  check_last_dim_contiguous(topk_idx, "topk_idx");
  const int64_t stride = topk_idx.stride(0);
  for (int64_t t = 0; t < topk_idx.size(0); ++t)
    for (int64_t k = 0; k < topk_idx.size(1); ++k) {
      const int64_t e = is64 ? static_cast<const int64_t*>(topk_idx.const_data_ptr())[t * stride + k]
                             : static_cast<const int32_t*>(topk_idx.const_data_ptr())[t * stride + k];
      STD_TORCH_CHECK(-1 <= e && e < num_experts, "topk_idx[", t, ", ", k, "] = ", e, " is not an expert in [0, ",
                      num_experts, ") or -1");
    }
  return is64;
}

}  // namespace

void get_dispatch_layout(const Tensor& topk_idx, int64_t num_experts, int64_t num_ranks, Tensor num_tokens_per_rank,
                         Tensor num_tokens_per_expert, Tensor is_token_in_rank) {
  STD_TORCH_CHECK(num_ranks > 0 && num_experts > 0 && num_experts % num_ranks == 0, "num_experts (", num_experts,
                  ") must be a positive multiple of the ranks (", num_ranks, ")");
  // Every expert id must name an expert (or be -1) before anything is counted.
  const bool is64 = check_topk_idx(topk_idx, num_experts);
  const int64_t tokens = topk_idx.size(0), topk = topk_idx.size(1), stride = topk_idx.stride(0);
  for (const auto& [t, size, dtype, name] :
       {std::tuple{&num_tokens_per_rank, num_ranks, ScalarType::Int, "num_tokens_per_rank"},
        std::tuple{&num_tokens_per_expert, num_experts, ScalarType::Int, "num_tokens_per_expert"}}) {
    check_cpu(*t, name);
    check_dtype(*t, dtype, name);
    STD_TORCH_CHECK(t->dim() == 1 && t->size(0) == size && t->is_contiguous(), name, " must be a contiguous [", size,
                    "]");
  }
  check_cpu(is_token_in_rank, "is_token_in_rank");
  check_dtype(is_token_in_rank, ScalarType::Bool, "is_token_in_rank");
  STD_TORCH_CHECK(is_token_in_rank.dim() == 2 && is_token_in_rank.size(0) == tokens &&
                      is_token_in_rank.size(1) == num_ranks && is_token_in_rank.is_contiguous(),
                  "is_token_in_rank must be a contiguous [", tokens, ", ", num_ranks, "]");
  check_written_apart({{&num_tokens_per_rank, "num_tokens_per_rank"},
                       {&num_tokens_per_expert, "num_tokens_per_expert"},
                       {&is_token_in_rank, "is_token_in_rank"}},
                      {{&topk_idx, "topk_idx"}});
  LayoutArgs a{topk_idx.const_data_ptr(),
               is64,
               tokens,
               topk,
               stride,
               num_experts,
               num_ranks,
               static_cast<int32_t*>(num_tokens_per_rank.mutable_data_ptr()),
               static_cast<int32_t*>(num_tokens_per_expert.mutable_data_ptr()),
               static_cast<bool*>(is_token_in_rank.mutable_data_ptr())};
  SGL_NPU_ISA_CALL(dispatch_layout, a);
}

void low_latency_routes(const Tensor& topk_idx, const Tensor& counts, int64_t rank, int64_t slots, Tensor token,
                        Tensor source, Tensor dst_row, Tensor message_row, Tensor combine_row, Tensor per_rank,
                        Tensor recv_count, Tensor layout_range) {
  check_cpu(counts, "counts");
  check_dtype(counts, ScalarType::Long, "counts");
  STD_TORCH_CHECK(counts.dim() == 2 && counts.is_contiguous() && counts.size(0) > 0,
                  "counts must be a contiguous [ranks, experts]");
  const int64_t ranks = counts.size(0), experts = counts.size(1);
  STD_TORCH_CHECK(experts % ranks == 0, "the experts (", experts, ") must divide among ", ranks, " ranks");
  STD_TORCH_CHECK(0 <= rank && rank < ranks, "rank ", rank, " is outside [0, ", ranks, ")");
  const bool is64 = check_topk_idx(topk_idx, experts);
  const int64_t tokens = topk_idx.size(0), topk = topk_idx.size(1);
  // This rank's row of counts must be its own routing (it places every message by it).
  const int64_t* c = static_cast<const int64_t*>(counts.const_data_ptr());
  std::vector<int64_t> mine(experts, 0), first(experts, 0), before(experts, 0);
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t k = 0; k < topk; ++k) {
      const int64_t e = is64 ? static_cast<const int64_t*>(topk_idx.const_data_ptr())[t * topk_idx.stride(0) + k]
                             : static_cast<const int32_t*>(topk_idx.const_data_ptr())[t * topk_idx.stride(0) + k];
      if (e >= 0) ++mine[e];
    }
  int64_t total = 0;
  for (int64_t e = 0; e < experts; ++e) {
    STD_TORCH_CHECK(mine[e] == c[rank * experts + e], "counts[", rank, "] does not match topk_idx");
    first[e] = total;
    total += mine[e];
    for (int64_t s = 0; s < rank; ++s) before[e] += c[s * experts + e];
    int64_t all = before[e];
    for (int64_t s = rank; s < ranks; ++s) all += c[s * experts + e];
    STD_TORCH_CHECK(all <= slots, "expert ", e, " receives ", all, " rows, more than its ", slots, " slots");
  }
  auto int64_out = [](Tensor& t, int64_t size, const char* name) {
    return const_cast<int64_t*>(checked_vector<int64_t>(t, size, ScalarType::Long, name));
  };
  check_cpu(source, "source");
  check_dtype(source, ScalarType::Int, "source");
  STD_TORCH_CHECK(source.dim() == 2 && source.size(0) == total && source.size(1) == 2 && source.is_contiguous(),
                  "source must be a contiguous [", total, ", 2]");
  // Checked before any is written (layout_range and the rest are shaped-checked below, before they are written).
  check_written_apart({{&token, "token"},
                       {&source, "source"},
                       {&dst_row, "dst_row"},
                       {&message_row, "message_row"},
                       {&combine_row, "combine_row"},
                       {&per_rank, "per_rank"},
                       {&recv_count, "recv_count"},
                       {&layout_range, "layout_range"}},
                      {{&topk_idx, "topk_idx"}, {&counts, "counts"}});
  RoutesArgs a{topk_idx.const_data_ptr(),
               is64,
               tokens,
               topk,
               topk_idx.stride(0),
               experts,
               experts / ranks,
               slots,
               rank,
               first.data(),
               before.data(),
               int64_out(token, total, "token"),
               static_cast<int32_t*>(source.mutable_data_ptr()),
               int64_out(dst_row, total, "dst_row"),
               int64_out(message_row, tokens * topk, "message_row"),
               int64_out(combine_row, tokens * topk, "combine_row")};
  SGL_NPU_ISA_CALL(low_latency_routes, a);

  // What the counts say without looking at any message: this rank's messages per destination rank, and the rows
  // each local expert receives, in all and from each source rank (DeepEP's layout_range: (first << 32) | rows).
  const int64_t local = experts / ranks;
  int64_t* to_rank = int64_out(per_rank, ranks, "per_rank");
  int32_t* received = const_cast<int32_t*>(checked_vector<int32_t>(recv_count, local, ScalarType::Int, "recv_count"));
  check_cpu(layout_range, "layout_range");
  check_dtype(layout_range, ScalarType::Long, "layout_range");
  STD_TORCH_CHECK(layout_range.dim() == 2 && layout_range.size(0) == local && layout_range.size(1) == ranks &&
                      layout_range.is_contiguous(),
                  "layout_range must be a contiguous [", local, ", ", ranks, "]");
  int64_t* range = static_cast<int64_t*>(layout_range.mutable_data_ptr());
  for (int64_t p = 0; p < ranks; ++p) {
    to_rank[p] = 0;
    for (int64_t i = 0; i < local; ++i) to_rank[p] += c[rank * experts + p * local + i];
  }
  for (int64_t i = 0; i < local; ++i) {
    int64_t begin = 0;
    for (int64_t s = 0; s < ranks; ++s) {
      const int64_t rows = c[s * experts + rank * local + i];
      range[i * ranks + s] = (begin << 32) | rows;
      begin += rows;
    }
    received[i] = static_cast<int32_t>(begin);
  }
}

void low_latency_returns(const Tensor& layout_range, const Tensor& recv_slot, Tensor rows, Tensor returned,
                         Tensor per_source) {
  check_cpu(layout_range, "layout_range");
  check_dtype(layout_range, ScalarType::Long, "layout_range");
  STD_TORCH_CHECK(layout_range.dim() == 2 && layout_range.is_contiguous(), "layout_range must be a contiguous [L, R]");
  check_cpu(recv_slot, "recv_slot");
  check_dtype(recv_slot, ScalarType::Int, "recv_slot");
  const int64_t local = layout_range.size(0), ranks = layout_range.size(1);
  STD_TORCH_CHECK(recv_slot.dim() == 2 && recv_slot.size(0) == local, "recv_slot must be [", local, ", slots]");
  const int64_t slots = recv_slot.size(1);
  const int64_t* range = static_cast<const int64_t*>(layout_range.const_data_ptr());
  int64_t total = 0;
  for (int64_t i = 0; i < local * ranks; ++i) {
    const int64_t begin = range[i] >> 32, count = range[i] & 0xFFFFFFFF;
    STD_TORCH_CHECK(0 <= begin && begin + count <= slots, "layout_range[", i / ranks, ", ", i % ranks,
                    "] names rows outside the ", slots, " slots");
    total += count;
  }
  STD_TORCH_CHECK(rows.dim() == 1 && rows.size(0) >= total, "rows must hold at least ", total, " entries");
  STD_TORCH_CHECK(returned.dim() == 1 && returned.size(0) >= total, "returned must hold at least ", total, " entries");
  for (const auto& [t, name] : {std::pair{&rows, "rows"}, std::pair{&returned, "returned"}}) {
    check_cpu(*t, name);
    check_dtype(*t, ScalarType::Long, name);
    check_contiguous(*t, name);
  }
  check_written_apart({{&rows, "rows"}, {&returned, "returned"}, {&per_source, "per_source"}},
                      {{&layout_range, "layout_range"}, {&recv_slot, "recv_slot"}});
  ReturnsArgs a{range,
                static_cast<const int32_t*>(recv_slot.const_data_ptr()),
                local,
                ranks,
                slots,
                recv_slot.stride(0),
                recv_slot.stride(1),
                static_cast<int64_t*>(rows.mutable_data_ptr()),
                static_cast<int64_t*>(returned.mutable_data_ptr()),
                const_cast<int64_t*>(checked_vector<int64_t>(per_source, ranks, ScalarType::Long, "per_source"))};
  SGL_NPU_ISA_CALL(low_latency_returns, a);
}

void send_rows(const Tensor& is_token_in_rank, const std::optional<Tensor>& topk_idx,
               const std::optional<Tensor>& topk_weights, int64_t num_experts, Tensor send_token,
               const std::optional<Tensor>& idx_rows, const std::optional<Tensor>& weight_rows) {
  check_cpu(is_token_in_rank, "is_token_in_rank");
  check_dtype(is_token_in_rank, ScalarType::Bool, "is_token_in_rank");
  STD_TORCH_CHECK(is_token_in_rank.dim() == 2 && is_token_in_rank.is_contiguous() && is_token_in_rank.size(1) > 0,
                  "is_token_in_rank must be a contiguous [tokens, ranks]");
  const int64_t tokens = is_token_in_rank.size(0), ranks = is_token_in_rank.size(1);
  const bool* in_rank = static_cast<const bool*>(is_token_in_rank.const_data_ptr());
  int64_t rows = 0;
  for (int64_t i = 0; i < tokens * ranks; ++i) rows += in_rank[i];
  int64_t* send = const_cast<int64_t*>(checked_vector<int64_t>(send_token, rows, ScalarType::Long, "send_token"));
  SendRowsArgs a{in_rank, nullptr, false, nullptr, tokens, ranks, 0, 0, 0, 0, send, nullptr, nullptr};
  STD_TORCH_CHECK(topk_idx.has_value() == topk_weights.has_value() && topk_idx.has_value() == idx_rows.has_value() &&
                      topk_idx.has_value() == weight_rows.has_value(),
                  "topk_idx, topk_weights, idx_rows and weight_rows go together");
  if (topk_idx.has_value()) {
    STD_TORCH_CHECK(num_experts > 0 && num_experts % ranks == 0, "num_experts (", num_experts,
                    ") must be a positive multiple of the ranks (", ranks, ")");
    a.topk_int64 = check_topk_idx(*topk_idx, num_experts);
    a.topk_idx = topk_idx->const_data_ptr();
    a.topk = topk_idx->size(1);
    a.topk_stride = topk_idx->stride(0);
    STD_TORCH_CHECK(topk_idx->size(0) == tokens, "topk_idx must have a row per token (", tokens, ")");
    check_cpu(*topk_weights, "topk_weights");
    check_dtype(*topk_weights, ScalarType::Float, "topk_weights");
    STD_TORCH_CHECK(topk_weights->dim() == 2 && topk_weights->size(0) == tokens && topk_weights->size(1) == a.topk,
                    "topk_weights must be [", tokens, ", ", a.topk, "]");
    check_last_dim_contiguous(*topk_weights, "topk_weights");
    a.topk_weights = static_cast<const float*>(topk_weights->const_data_ptr());
    a.weights_stride = topk_weights->stride(0);
    a.experts_per_rank = num_experts / ranks;
    for (const auto& [t, dtype, name] : {std::tuple{&*idx_rows, topk_idx->scalar_type(), "idx_rows"},
                                         std::tuple{&*weight_rows, ScalarType::Float, "weight_rows"}}) {
      check_cpu(*t, name);
      check_dtype(*t, dtype, name);
      STD_TORCH_CHECK(t->dim() == 2 && t->size(0) == rows && t->size(1) == a.topk && t->is_contiguous(), name,
                      " must be a contiguous [", rows, ", ", a.topk, "]");
    }
    a.idx_rows = const_cast<void*>(idx_rows->const_data_ptr());
    a.weight_rows = static_cast<float*>(const_cast<void*>(weight_rows->const_data_ptr()));
  }
  SGL_NPU_ISA_CALL(send_rows, a);
}

}  // namespace deep_ep
