// The wheel's only registration file: schemas of torch.ops.deep_ep.* and their CPU kernels.
#include <torch/csrc/stable/library.h>

#include "ops/ops.h"

STABLE_TORCH_LIBRARY(deep_ep, m) {
  m.def(
      "get_dispatch_layout(Tensor topk_idx, int num_experts, int num_ranks, Tensor(a!) num_tokens_per_rank, "
      "Tensor(b!) num_tokens_per_expert, Tensor(c!) is_token_in_rank) -> ()");
  m.def(
      "send_rows(Tensor is_token_in_rank, Tensor? topk_idx, Tensor? topk_weights, int num_experts, "
      "Tensor(a!) send_token, Tensor(b!)? idx_rows, Tensor(c!)? weight_rows) -> ()");
  m.def(
      "low_latency_routes(Tensor topk_idx, Tensor counts, int rank, int slots, Tensor(a!) token, Tensor(b!) source, "
      "Tensor(c!) dst_row, Tensor(d!) message_row, Tensor(e!) combine_row, Tensor(f!) per_rank, Tensor(g!) recv_count, "
      "Tensor(h!) layout_range) -> ()");
  m.def(
      "low_latency_returns(Tensor layout_range, Tensor recv_slot, Tensor(a!) rows, Tensor(b!) returned, "
      "Tensor(c!) per_source) -> ()");
  m.def("copy_rows(Tensor src, Tensor? src_rows, Tensor(a!) dst, Tensor? dst_rows) -> ()");
  m.def("reduce_rows(Tensor a, Tensor b, Tensor rows, Tensor? weights, Tensor? bias, Tensor(a!) out) -> ()");
  m.def("quantize_int8(Tensor x, Tensor(a!) q, Tensor(b!) scales) -> ()");
  m.def("shm_barrier(Tensor(a!) flags, int rank, int epoch, float timeout_s, Tensor pids) -> ()");
}

STABLE_TORCH_LIBRARY_IMPL(deep_ep, CPU, m) {
  m.impl("get_dispatch_layout", TORCH_BOX(&deep_ep::get_dispatch_layout));
  m.impl("send_rows", TORCH_BOX(&deep_ep::send_rows));
  m.impl("low_latency_routes", TORCH_BOX(&deep_ep::low_latency_routes));
  m.impl("low_latency_returns", TORCH_BOX(&deep_ep::low_latency_returns));
  m.impl("copy_rows", TORCH_BOX(&deep_ep::copy_rows));
  m.impl("reduce_rows", TORCH_BOX(&deep_ep::reduce_rows));
  m.impl("quantize_int8", TORCH_BOX(&deep_ep::quantize_int8));
  m.impl("shm_barrier", TORCH_BOX(&deep_ep::shm_barrier));
}
