// Framework-free CPU kernels of sgl-npu-norm. Each works on a range of rows so the op layer can thread it;
// each is compiled once per ISA (see sgl_npu_core/isa.h).
#pragma once
#include <cstdint>

#include "sgl_npu_core/dtype.h"
#include "sgl_npu_core/isa.h"

namespace sgl_npu_norm {

using sgl_npu_core::DType;

// out = rmsnorm(src) * weight (+ bias), where src = x, or src = x + residual rounded to the dtype and
// stored at `sum` (which may alias `residual`). `out` may alias `x`. With quant_scale, out is int8:
// saturate(round_half_even(out * quant_scale + quant_offset)). Per-channel params are fp32.
struct NormArgs {
  DType dtype;
  int64_t hidden;
  float eps;
  const void* x;
  int64_t x_stride;
  const void* residual;  // optional
  int64_t residual_stride;
  void* sum;  // required with residual
  int64_t sum_stride;
  const float* weight;        // fp32 (see ChannelParam), or null with weight_same
  const float* bias;          // optional
  const void* weight_same;    // the weight in the dtype of x, read as it is (see ChannelParam)
  const void* bias_same;      // optional, likewise; set with weight_same
  const float* quant_scale;   // optional
  const float* quant_offset;  // optional
  void* out;
  int64_t out_stride;
  bool stream;         // write `out` with non-temporal stores (see sgl_npu_core::should_stream)
  bool ask_next_rows;  // x (and residual) far larger than the caches: ask for the next rows ahead (sum_squares)
};

enum class GluKind : int8_t { silu_and_mul, swiglu_oai };

// silu_and_mul: x = [gate | up]; swiglu_oai: gate/up interleaved in (even, odd) columns.
struct GluArgs {
  DType dtype;
  GluKind kind;
  int64_t d;  // output width
  float alpha;
  float limit;
  const void* x;
  int64_t x_stride;
  void* out;
  int64_t out_stride;
  bool stream;
};

// y = silu(gate) * up (or, with do_limit, min(silu(gate), limit) * clamp(up, +-limit)) on x = [gate | up],
// then per-row symmetric int8: scale = max|y| / 127, q = clamp(floor(y / scale + 0.5), -128, 127).
struct SwigluQuantArgs {
  DType dtype;
  int64_t d;
  bool do_limit;
  float limit;
  const void* x;
  int64_t x_stride;
  int8_t* q;
  int64_t q_stride;
  float* scale;
  bool stream;  // q written around the caches (should_stream)
};

// Per token and head of x [T, H, W] (last dim contiguous): optional RMSNorm over the head (or with a given
// per-token rstd), its result rounded to the dtype, then RoPE on the first rope_dim dims, written to `out`
// (which may be x). The rotation of dim j is out[j] = y[j] * C[j] + y[partner(j)] * S[j], where the per-token
// tables come from cos/sin rows (row t, or positions[t]):
//   NeoX (partner j +- rope_dim/2): C = cos[j], S = -+sin[j] over rope_dim values (full_width), or cos/sin[j mod
//   rope_dim/2] from half-width rows; GPT-J (partner j ^ 1): C = cos[j/2], S = -+sin[j/2].
struct HeadNormRopeArgs {
  DType dtype;
  bool by16;  // 16 values per step in load16's order (bf16, whole blocks of 16); weight and bias in that order
  int64_t heads, width;
  const void* x;  // may equal out
  int64_t x_token_stride, x_head_stride;
  void* out;
  int64_t out_token_stride, out_head_stride;
  bool norm;
  float eps;
  const float* rstd;  // optional, per token (rstd[t * rstd_stride]): replaces the per-head statistics
  int64_t rstd_stride;
  bool whole_width;     // with norm and no rstd: one statistic over all the heads of a token, not one per head
  const float* weight;  // optional; [W] (head stride 0) or [H * W] (head stride W)
  const float* bias;    // optional, same layout as weight
  int64_t param_head_stride;
  int64_t rope_dim;  // 0: no rotation
  bool neox, full_width;
  DType table_dtype;
  const void* cos;
  const void* sin;
  int64_t table_stride;
  const void* positions;  // optional int32/int64 [T], already checked to index the tables
  bool positions_int64;
  bool stream;  // write `out` with non-temporal stores: needs 16-byte aligned heads and rope_dim / 2 % 8 == 0
  // Rows to ask the caches for a token ahead, spread over the heads' work (the bf16 16- and 32-wide paths): row t + 1
  // while token t is computed, up to row `until`. Without `base` each head asks for the next token's same head.
  struct RowRequest {
    const char* base = nullptr;
    int64_t stride = 0, bytes = 0, until = 0;
  } next_rows;
  // Optional: a second head group of the same tokens (a split op's k after its q), computed token by token right
  // after this group's heads, on the same rotation tables; this group's next_rows requests cover both groups' rows.
  // Where the 32-wide path cannot take the pair, the groups run one after the other over the range.
  const HeadNormRopeArgs* then = nullptr;
};

// Per row r of x, the fp32 sum of squares of each group g of consecutive columns, from column 0 on:
// out[r * groups + g]. (Tensor-parallel RMSNorm: the local sums, all-reduced before the norm.)
struct GroupSquaresArgs {
  DType dtype;
  const void* x;
  int64_t x_stride;
  const int64_t* widths;  // [groups], each > 0
  int64_t groups;
  float* out;
};

// Per row t: `count` pieces of `bytes` bytes, piece i copied from src + t * src_row + i * src_step to
// dst + t * dst_row + i * bytes (side by side); around the caches when `stream` (sgl_npu_core::copy_stream). With
// `ask_next` each piece of the next row (up to `end`) is asked for while this row's is copied: rows far apart, where
// the hardware prefetcher restarts. (The split ops' v and gate outputs.)
struct RowPiecesArgs {
  const char* src;
  int64_t src_row, src_step;
  char* dst;
  int64_t dst_row, bytes, count;
  bool stream, ask_next;
};

SGL_NPU_DECLARE_PER_ISA(void rmsnorm_rows(const NormArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void head_norm_rope_tokens(const HeadNormRopeArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void group_sum_squares_rows(const GroupSquaresArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void glu_rows(const GluArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void swiglu_quant_rows(const SwigluQuantArgs& a, int64_t begin, int64_t end))
SGL_NPU_DECLARE_PER_ISA(void copy_row_pieces(const RowPiecesArgs& a, int64_t begin, int64_t end))
// dst = src + add as fp32, in the order sgl_npu_core::load16 gives values of dtype `order` (what the kernels
// read per-channel parameters with).
SGL_NPU_DECLARE_PER_ISA(void to_float32(DType dtype, const void* src, float* dst, int64_t n, float add, DType order))

}  // namespace sgl_npu_norm
