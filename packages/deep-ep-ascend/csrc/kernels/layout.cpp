#include <algorithm>
#include <vector>

#include "kernels/kernels.h"

namespace deep_ep::SGL_NPU_ISA {

namespace {

template <class I>
void layout(const LayoutArgs& a) {
  const int64_t per_rank = a.num_experts / a.num_ranks;
  std::fill(a.tokens_per_rank, a.tokens_per_rank + a.num_ranks, 0);
  std::fill(a.tokens_per_expert, a.tokens_per_expert + a.num_experts, 0);
  for (int64_t t = 0; t < a.tokens; ++t) {
    const I* row = static_cast<const I*>(a.topk_idx) + t * a.topk_stride;
    bool* in_rank = a.is_token_in_rank + t * a.num_ranks;
    std::fill(in_rank, in_rank + a.num_ranks, false);
    for (int64_t k = 0; k < a.topk; ++k) {
      if (row[k] < 0) continue;
      ++a.tokens_per_expert[row[k]];
      in_rank[row[k] / per_rank] = true;
    }
    for (int64_t r = 0; r < a.num_ranks; ++r) a.tokens_per_rank[r] += in_rank[r];
  }
}

template <class I>
void routes(const RoutesArgs& a) {
  std::vector<int64_t> cursor(a.first, a.first + a.num_experts);
  for (int64_t t = 0; t < a.tokens; ++t) {  // tokens ascending, so each expert's messages are too
    const I* row = static_cast<const I*>(a.topk_idx) + t * a.topk_stride;
    for (int64_t k = 0; k < a.topk; ++k) {
      const int64_t e = row[k];
      const int64_t message = t * a.topk + k;
      if (e < 0) {
        a.message_row[message] = a.combine_row[message] = -1;
        continue;
      }
      const int64_t m = cursor[e]++;
      const int64_t dst = (e % a.local_experts) * a.slots + a.before_me[e] + (m - a.first[e]);
      a.token[m] = t;
      a.source[2 * m] = static_cast<int32_t>(t);
      a.source[2 * m + 1] = static_cast<int32_t>(message);
      a.dst_row[m] = dst;
      a.message_row[message] = dst;
      a.combine_row[message] = e / a.local_experts == a.rank ? dst : a.local_experts * a.slots + message;
    }
  }
}

template <class I>
void rows_to_send(const SendRowsArgs& a) {
  int64_t m = 0;
  for (int64_t r = 0; r < a.ranks; ++r)
    for (int64_t t = 0; t < a.tokens; ++t) {
      if (!a.is_token_in_rank[t * a.ranks + r]) continue;
      a.send_token[m] = t;
      if (a.topk_idx != nullptr) {
        const I* idx = static_cast<const I*>(a.topk_idx) + t * a.topk_stride;
        const float* w = a.topk_weights + t * a.weights_stride;
        I* local = static_cast<I*>(a.idx_rows) + m * a.topk;
        for (int64_t k = 0; k < a.topk; ++k) {
          const int64_t e = idx[k] - r * a.experts_per_rank;
          const bool here = idx[k] >= 0 && 0 <= e && e < a.experts_per_rank;
          local[k] = here ? I(e) : I(-1);
          a.weight_rows[m * a.topk + k] = here ? w[k] : 0.0f;
        }
      }
      ++m;
    }
}

}  // namespace

void send_rows(const SendRowsArgs& a) {
  if (a.topk_int64)
    rows_to_send<int64_t>(a);
  else
    rows_to_send<int32_t>(a);
}

void low_latency_routes(const RoutesArgs& a) {
  if (a.topk_int64)
    routes<int64_t>(a);
  else
    routes<int32_t>(a);
}

void low_latency_returns(const ReturnsArgs& a) {
  int64_t m = 0;
  for (int64_t p = 0; p < a.ranks; ++p) {
    const int64_t start = m;
    for (int64_t i = 0; i < a.local_experts; ++i) {
      const int64_t range = a.layout_range[i * a.ranks + p], begin = range >> 32, count = range & 0xFFFFFFFF;
      const int32_t* slot = a.recv_slot + i * a.slot_row_stride;
      for (int64_t j = begin; j < begin + count; ++j, ++m) {
        a.rows[m] = i * a.slots + j;
        a.returned[m] = slot[j * a.slot_col_stride];
      }
    }
    a.per_source[p] = m - start;
  }
}

void dispatch_layout(const LayoutArgs& a) {
  if (a.topk_int64)
    layout<int64_t>(a);
  else
    layout<int32_t>(a);
}

}  // namespace deep_ep::SGL_NPU_ISA
