#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/kernels.h"
#include "ops/channel_param.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"
#include "sgl_npu_core/vec.h"

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
  check_last_dim_contiguous(t, name);
  return Heads{t.size(0), t.size(1), t.size(2), t.stride(0), t.stride(1)};
}

// A [T, width] tensor whose last dim is contiguous; returns its row stride.
int64_t check_matrix(const Tensor& t, int64_t tokens, int64_t width, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 2, name, " must be [", tokens, ", ", width, "], got ", t.dim(), " dims");
  STD_TORCH_CHECK(t.size(0) == tokens && t.size(1) == width, name, " must have shape [", tokens, ", ", width,
                  "], got [", t.size(0), ", ", t.size(1), "]");
  check_last_dim_contiguous(t, name);
  return t.stride(0);
}

// cos or sin: [rows, >= width] float, last dim contiguous; returns the row stride.
int64_t check_table(const Tensor& t, int64_t width, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 2 && t.size(1) >= width, name, " must be [rows, >= ", width, "], got ", t.dim(),
                  " dims with last size ", t.dim() ? t.size(t.dim() - 1) : 0);
  check_last_dim_contiguous(t, name);
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

// The rotation tables of a call, checked once and shared by its head groups.
struct RopeTables {
  int64_t rope_dim = 0;
  bool neox = true, full_width = false;
  DType dtype = DType::f32;
  const void* cos = nullptr;
  const void* sin = nullptr;
  int64_t stride = 0;
  const void* positions = nullptr;
  bool positions_int64 = false;

  RopeTables(const std::optional<Tensor>& c, const std::optional<Tensor>& s, const std::optional<Tensor>& p,
             int64_t rope, bool neox_style, bool full, int64_t tokens, int64_t head_dim)
      : rope_dim(rope), neox(neox_style), full_width(neox_style && full) {
    STD_TORCH_CHECK(rope >= 0 && rope % 2 == 0 && rope <= head_dim, "rope_dim must be even and in [0, ", head_dim,
                    "], got ", rope);
    if (rope == 0) return;
    STD_TORCH_CHECK(c.has_value() && s.has_value(), "cos and sin are needed when rope_dim > 0");
    const int64_t width = full_width ? rope : rope / 2;
    stride = check_table(*c, width, "cos");
    STD_TORCH_CHECK(check_table(*s, width, "sin") == stride && s->size(0) == c->size(0),
                    "sin must have the rows and row stride of cos");
    check_same_dtype(*s, *c, "sin", "cos");
    dtype = float_dtype(*c, "cos");
    cos = c->const_data_ptr();
    sin = s->const_data_ptr();
    if (p.has_value()) {
      check_positions(*p, tokens, c->size(0));
      positions = p->const_data_ptr();
      positions_int64 = p->scalar_type() == ScalarType::Long;
    } else {
      STD_TORCH_CHECK(c->size(0) >= tokens, "cos must have a row per token (", tokens, "), got ", c->size(0));
    }
  }
};

// The order the kernel reads per-channel params in: load16's for bf16 heads cut in whole blocks of 16 (the head, its
// rotated dims and, for NeoX, each half of them), where it takes its 16-wide path; memory order otherwise.
DType param_order(DType dtype, int64_t width, const RopeTables& t) {
  const bool whole_blocks = width % 16 == 0 && t.rope_dim % 16 == 0 && (!t.neox || t.rope_dim / 2 % 16 == 0);
  return dtype == DType::bf16 && whole_blocks ? DType::bf16 : DType::f32;
}

// One group of heads (q or k) of a call: its norm parameters as fp32 and the kernel's arguments. Per-head params
// are [head_dim]; with a given rstd (a norm across the whole width) they may also be [heads * head_dim].
struct HeadGroup {
  ChannelParam weight, bias;
  HeadNormRopeArgs args{};

  HeadGroup(DType dtype, const Heads& shape, const std::optional<Tensor>& w, const std::optional<Tensor>& b, double eps,
            bool gemma, bool norm, const float* rstd, int64_t rstd_stride, bool whole_width, const RopeTables& tables,
            const char* w_name, const char* b_name)
      : weight(norm ? w : std::nullopt, param_size(shape, w, rstd || whole_width), w_name, gemma ? 1.f : 0.f,
               param_order(dtype, shape.width, tables)),
        bias(norm ? b : std::nullopt, param_size(shape, w, rstd || whole_width), b_name, 0.f,
             param_order(dtype, shape.width, tables)) {
    STD_TORCH_CHECK(eps >= 0, "eps must be >= 0, got ", eps);
    STD_TORCH_CHECK(rstd == nullptr || norm, "rstd needs norm=True");
    STD_TORCH_CHECK(!whole_width || (norm && rstd == nullptr), "whole_width needs norm=True and no rstd");
    args.dtype = dtype;
    args.by16 = param_order(dtype, shape.width, tables) == DType::bf16;
    args.heads = shape.heads;
    args.width = shape.width;
    args.norm = norm;
    args.eps = float(eps);
    args.rstd = rstd;
    args.rstd_stride = rstd_stride;
    args.whole_width = whole_width;
    args.weight = weight.get();
    args.bias = bias.get();
    args.param_head_stride = param_size(shape, w, rstd || whole_width) == shape.width ? 0 : shape.width;
    args.rope_dim = tables.rope_dim;
    args.neox = tables.neox;
    args.full_width = tables.full_width;
    args.table_dtype = tables.dtype;
    args.cos = tables.cos;
    args.sin = tables.sin;
    args.table_stride = tables.stride;
    args.positions = tables.positions;
    args.positions_int64 = tables.positions_int64;
  }

  // A norm across the heads (a given rstd, or whole_width) may take a weight over all of them.
  static int64_t param_size(const Heads& shape, const std::optional<Tensor>& w, bool across_heads) {
    const int64_t all = shape.heads * shape.width;
    return across_heads && w.has_value() && w->dim() == 1 && w->size(0) == all ? all : shape.width;
  }
};

const float* checked_rstd(const std::optional<Tensor>& rstd, int64_t tokens, int64_t columns) {
  if (!rstd.has_value()) return nullptr;
  check_cpu(*rstd, "rstd");
  check_dtype(*rstd, ScalarType::Float, "rstd");
  const bool ok = columns == 1 ? rstd->dim() == 1 && rstd->size(0) == tokens
                               : rstd->dim() == 2 && rstd->size(0) == tokens && rstd->size(1) == columns;
  STD_TORCH_CHECK(ok, "rstd must have shape [", tokens, columns == 1 ? "" : ", 2", "]");
  check_contiguous(*rstd, "rstd");
  return static_cast<const float*>(rstd->const_data_ptr());
}

int64_t bytes_of(DType d) { return d == DType::f32 ? 4 : 2; }

// Non-temporal stores pay for large separate outputs whose every 8-element store lands 16-byte aligned.
bool stream_heads(const HeadNormRopeArgs& a, int64_t tokens) {
  const int64_t elem = bytes_of(a.dtype);
  return a.out != a.x && a.rope_dim % 16 == 0 && (elem * a.out_head_stride) % 16 == 0 &&
         should_stream(a.out, tokens, elem * a.heads * a.width, elem * a.out_token_stride);
}

// The split op's outputs apart from the qkv columns they are not computed from; each may be exactly its own columns
// (in place: a token's heads are read before they are written), except q and gate with gates, whose columns
// interleave.
void check_outputs_apart(const Tensor& qkv, int64_t qkv_stride, int64_t q_width, int64_t kv_hidden, bool q_gate,
                         const Tensor* const outs[4], const char* const names[4]) {
  const int64_t elem = int64_t(qkv.element_size()), first = int64_t(reinterpret_cast<uintptr_t>(qkv.const_data_ptr()));
  auto columns = [&](int64_t col, int64_t width) {
    return ByteRows{first + col * elem, qkv.size(0), qkv_stride * elem, width * elem};
  };
  const ByteRows blocks[3] = {columns(0, q_width), columns(q_width, kv_hidden),
                              columns(q_width + kv_hidden, kv_hidden)};
  const char* block_names[3] = {"qkv's q columns", "qkv's k columns", "qkv's v columns"};
  const int own_block[4] = {0, 1, 2, 0};
  for (int i = 0; i < 4; ++i) {
    const auto o = outs[i] ? byte_rows(*outs[i]) : std::nullopt;  // none where empty: nothing to share
    if (!o) continue;
    for (int b = 0; b < 3; ++b) {
      const bool in_place = b == own_block[i] && !(q_gate && b == 0) && same_rows(*o, blocks[b]);
      STD_TORCH_CHECK(in_place || blocks[b].width == 0 || qkv.size(0) == 0 || !share_memory(*o, blocks[b]), names[i],
                      " must not overlap ", block_names[b]);
    }
  }
}

}  // namespace

void head_norm_rope(const std::optional<Tensor>& x, const std::optional<Tensor>& weight,
                    const std::optional<Tensor>& bias, double eps, bool gemma, bool norm,
                    const std::optional<Tensor>& rstd, const std::optional<Tensor>& cos,
                    const std::optional<Tensor>& sin, const std::optional<Tensor>& positions, int64_t rope_dim,
                    bool neox, bool full_width, Tensor out, const std::optional<Tensor>& x2,
                    const std::optional<Tensor>& out2) {
  const Heads o = as_heads(out, "out");
  check_disjoint(out, "out");
  const Tensor& src = x.has_value() ? *x : out;  // no x: in place
  const Heads xi = x.has_value() ? as_heads(*x, "x") : o;
  STD_TORCH_CHECK(xi.tokens == o.tokens && xi.heads == o.heads && xi.width == o.width, "out must have the shape of x [",
                  xi.tokens, ", ", xi.heads, ", ", xi.width, "]");
  check_same_dtype(out, src, "out", "x");
  if (x.has_value()) check_same_or_apart(out, *x, "out", "x");
  const DType dtype = float_dtype(src, "x");
  STD_TORCH_CHECK(out2.has_value() || !x2.has_value(), "x2 needs out2");
  // A second head group (a query's and a key's heads): every other argument shared, both checked before either is
  // written and run in one pass over the tokens (at decode sizes most of a call is its dispatch).
  const Tensor* src2 = out2.has_value() ? (x2.has_value() ? &*x2 : &*out2) : nullptr;
  Heads o2{}, xi2{};
  if (out2.has_value()) {
    o2 = as_heads(*out2, "out2");
    check_disjoint(*out2, "out2");
    xi2 = x2.has_value() ? as_heads(*x2, "x2") : o2;
    STD_TORCH_CHECK(xi2.tokens == o2.tokens && xi2.heads == o2.heads && xi2.width == o2.width,
                    "out2 must have the shape of x2 [", xi2.tokens, ", ", xi2.heads, ", ", xi2.width, "]");
    STD_TORCH_CHECK(o2.tokens == o.tokens && o2.width == o.width, "x2 must have x's ", o.tokens, " tokens and ",
                    o.width, "-wide heads");
    check_same_dtype(*out2, src, "out2", "x");
    if (x2.has_value()) {
      check_same_dtype(*x2, src, "x2", "x");
      check_same_or_apart(*out2, *x2, "out2", "x2");  // each group may be in place
      check_apart(out, *x2, "out", "x2");
    }
    if (x.has_value()) check_apart(*out2, *x, "out2", "x");  // in place: out2 against out, below
  }
  // The outputs apart, and from what every token reads again (positions are checked once, then indexed by).
  check_written_apart({{&out, "out"}, {given(out2), "out2"}}, {{given(positions), "positions"},
                                                               {given(cos), "cos"},
                                                               {given(sin), "sin"},
                                                               {given(weight), "weight"},
                                                               {given(bias), "bias"},
                                                               {given(rstd), "rstd"}});
  const RopeTables tables(cos, sin, positions, rope_dim, neox, full_width, o.tokens, o.width);
  const float* r = checked_rstd(rstd, o.tokens, 1);
  auto group = [&](const Tensor& from, const Heads& in, Tensor& to, const Heads& shape) {
    auto g = std::make_unique<HeadGroup>(dtype, shape, weight, bias, eps, gemma, norm, r, 1, false, tables, "weight",
                                         "bias");
    g->args.x = from.const_data_ptr();
    g->args.x_token_stride = in.token_stride;
    g->args.x_head_stride = in.head_stride;
    g->args.out = to.mutable_data_ptr();
    g->args.out_token_stride = shape.token_stride;
    g->args.out_head_stride = shape.head_stride;
    g->args.stream = stream_heads(g->args, shape.tokens);
    return g;
  };
  const auto g1 = group(src, xi, out, o);
  std::unique_ptr<HeadGroup> g2;
  if (out2.has_value()) {
    Tensor second = *out2;
    g2 = group(*src2, xi2, second, o2);
  }
  const HeadNormRopeArgs* a1 = &g1->args;
  const HeadNormRopeArgs* a2 = g2 ? &g2->args : nullptr;
  parallel_rows(o.tokens, 2 * bytes_of(dtype) * (o.heads + (a2 ? o2.heads : 0)) * o.width,
                [a1, a2](int64_t begin, int64_t end) {
                  SGL_NPU_ISA_CALL(head_norm_rope_tokens, *a1, begin, end);
                  if (a2) SGL_NPU_ISA_CALL(head_norm_rope_tokens, *a2, begin, end);
                });
}

void split_qkv_norm_rope(const Tensor& qkv, int64_t head_dim, int64_t q_heads, int64_t kv_heads, bool q_gate,
                         const std::optional<Tensor>& q_weight, const std::optional<Tensor>& k_weight,
                         const std::optional<Tensor>& q_bias, const std::optional<Tensor>& k_bias, double eps,
                         bool gemma, bool norm, const std::optional<Tensor>& rstd, bool whole_width,
                         const std::optional<Tensor>& cos, const std::optional<Tensor>& sin,
                         const std::optional<Tensor>& positions, int64_t rope_dim, bool neox, bool full_width, Tensor q,
                         Tensor k, Tensor v, const std::optional<Tensor>& gate) {
  check_cpu(qkv, "qkv");
  STD_TORCH_CHECK(head_dim > 0 && q_heads >= 0 && kv_heads >= 0, "head_dim must be > 0 and head counts >= 0");
  STD_TORCH_CHECK(qkv.dim() == 2, "qkv must be [tokens, hidden], got ", qkv.dim(), " dims");
  const int64_t tokens = qkv.size(0);
  // Head counts bounded by qkv's width first: their products with head_dim could wrap into a width that passes.
  const int64_t most_heads = qkv.size(1) / head_dim;
  STD_TORCH_CHECK(q_heads <= most_heads && kv_heads <= most_heads, "q_heads (", q_heads, ") and kv_heads (", kv_heads,
                  ") of head_dim ", head_dim, " must fit in qkv's ", qkv.size(1), " columns");
  const int64_t q_hidden = q_heads * head_dim, kv_hidden = kv_heads * head_dim;
  const int64_t q_width = q_gate ? 2 * q_hidden : q_hidden;
  const int64_t qkv_stride = check_matrix(qkv, tokens, q_width + 2 * kv_hidden, "qkv");
  const DType dtype = float_dtype(qkv, "qkv");
  const char* names[] = {"q", "k", "v", "gate"};
  const Tensor* outs[] = {&q, &k, &v, gate.has_value() ? &*gate : nullptr};
  const int64_t widths[] = {q_hidden, kv_hidden, kv_hidden, q_hidden};
  int64_t strides[4] = {0, 0, 0, 0};
  for (int i = 0; i < 4; ++i) {
    if (!outs[i]) continue;
    strides[i] = check_matrix(*outs[i], tokens, widths[i], names[i]);
    check_disjoint(*outs[i], names[i]);
    check_same_dtype(*outs[i], qkv, names[i], "qkv");
  }
  STD_TORCH_CHECK(q_gate == gate.has_value(), "gate must be given exactly when q heads hold a gate");
  check_outputs_apart(qkv, qkv_stride, q_width, kv_hidden, q_gate, outs, names);
  // The outputs apart from one another and from what every token reads again while they are written.
  check_written_apart({{outs[0], names[0]}, {outs[1], names[1]}, {outs[2], names[2]}, {outs[3], names[3]}},
                      {{given(positions), "positions"},
                       {given(cos), "cos"},
                       {given(sin), "sin"},
                       {given(q_weight), "q_weight"},
                       {given(k_weight), "k_weight"},
                       {given(q_bias), "q_bias"},
                       {given(k_bias), "k_bias"},
                       {given(rstd), "rstd"}});

  const RopeTables tables(cos, sin, positions, rope_dim, neox, full_width, tokens, head_dim);
  const float* r = checked_rstd(rstd, tokens, 2);
  const Heads q_shape{tokens, q_heads, head_dim, qkv_stride, q_gate ? 2 * head_dim : head_dim};
  const Heads k_shape{tokens, kv_heads, head_dim, qkv_stride, head_dim};
  HeadGroup gq(dtype, q_shape, q_weight, q_bias, eps, gemma, norm, r, 2, whole_width, tables, "q_weight", "q_bias");
  HeadGroup gk(dtype, k_shape, k_weight, k_bias, eps, gemma, norm, r ? r + 1 : nullptr, 2, whole_width, tables,
               "k_weight", "k_bias");
  const int64_t elem = bytes_of(dtype);
  const char* base = static_cast<const char*>(qkv.const_data_ptr());
  gq.args.x = base;
  gk.args.x = base + elem * q_width;
  for (HeadGroup* g : {&gq, &gk}) {
    g->args.x_token_stride = qkv_stride;
    g->args.x_head_stride = g == &gq ? q_shape.head_stride : head_dim;
    g->args.out_head_stride = head_dim;
  }
  gq.args.out = q.mutable_data_ptr();
  gq.args.out_token_stride = strides[0];
  gk.args.out = k.mutable_data_ptr();
  gk.args.out_token_stride = strides[1];
  gq.args.stream = stream_heads(gq.args, tokens);
  gk.args.stream = stream_heads(gk.args, tokens);

  const char* v_src = base + elem * (q_width + kv_hidden);
  char* v_dst = static_cast<char*>(v.mutable_data_ptr());
  char* g_dst = gate.has_value() ? static_cast<char*>(gate->mutable_data_ptr()) : nullptr;
  // The q pass asks for each next token's whole qkv row (its gates, k and v too), a slice per head, so the k pass
  // and the copies below read from the caches; the k pass asks for nothing. Large v and gate outputs are written
  // around the caches. (4096 tokens bf16, alternated in one process on two threads: split, gate, mrope, TP and
  // pos_cache 1.05-1.21x on both models' shapes; the v copy had been ~12 % of the op's time, its rows fetched by
  // memcpy's own loads.)
  const int64_t row_bytes = elem * (q_width + 2 * kv_hidden);
  const bool rows_asked =
      gq.args.by16 && tokens * row_bytes >= kStreamMinBytes;  // only the bf16 16- and 32-wide paths ask
  if (rows_asked) {  // smaller qkv mostly stays in the caches from the last call
    gq.args.next_rows = {base, elem * qkv_stride, row_bytes, 0};
    gk.args.next_rows = {base, 0, 0, 0};
  }
  const bool stream_v = should_stream(v_dst, tokens, elem * kv_hidden, elem * strides[2]);
  const bool stream_gate = g_dst && should_stream(g_dst, tokens, elem * q_width / 2, elem * strides[3]);
  // v: one piece per row; gate: the second half of each [q | gate] head. Copied by the ISA kernels, whose streamed
  // copy moves whole 64-byte lines with AVX-512 (4096 tokens, alternated in one process with the 16-byte copy this
  // file had inlined: gate 1.01-1.07x, mrope 1.01-1.11x, TP and split 1.03x, on two threads).
  const RowPiecesArgs v_rows{v_src, elem * qkv_stride, 0,          v_dst, elem * strides[2], elem * kv_hidden,
                             1,     stream_v,          !rows_asked};
  const RowPiecesArgs gate_rows{
      base + elem * head_dim, elem * qkv_stride,   2 * elem * head_dim, g_dst, elem * strides[3],
      elem * head_dim,        g_dst ? q_heads : 0, stream_gate,         false};
  auto copy_rows = [&](int64_t begin, int64_t end) {
    SGL_NPU_ISA_CALL(copy_row_pieces, v_rows, begin, end);
    if (g_dst) SGL_NPU_ISA_CALL(copy_row_pieces, gate_rows, begin, end);
  };
  // One small block of tokens at a time through q, k, then v and gate: each qkv row is read in one go (three
  // passes over a task's whole range would restart the hardware prefetcher at every row's k and v pages).
  constexpr int64_t kBlock = 16;
  parallel_rows(tokens, 2 * row_bytes, [&](int64_t first, int64_t last) {
    HeadNormRopeArgs aq = gq.args, ak = gk.args;
    aq.next_rows.until = last;  // across blocks, within this task
    // k's heads token by token right after q's, the next rows' requests spread over both (4096 tokens, alternated in
    // one process on two threads: Qwen3-8B split, pos_cache, mrope, TP and gate 1.01-1.11x; Qwen3-Next 0.91-1.09x).
    aq.then = &ak;
    for (int64_t begin = first; begin < last; begin += kBlock) {
      const int64_t end = std::min(last, begin + kBlock);
      SGL_NPU_ISA_CALL(head_norm_rope_tokens, aq, begin, end);
      copy_rows(begin, end);
    }
    if (stream_v || stream_gate) stream_fence();
  });
}

namespace {

// Rows [begin, end) of the mrope table in E-sized elements: each row the T axis's, then the H and W frequencies
// copied over theirs (one contiguous copy and ~h + w element moves per half, against a gather per element).
template <class E>
void mrope_rows(const E* src, const int64_t (&strides)[3], int64_t half, const std::vector<int64_t> (&freqs)[3], E* out,
                int64_t begin, int64_t end) {
  const int64_t col = strides[2];
  for (int64_t t = begin; t < end; ++t) {
    E* row = out + t * 2 * half;
    const E* first = src + t * strides[1];
    if (col == 1) {
      std::memcpy(row, first, sizeof(E) * 2 * half);
    } else {
      for (int64_t i = 0; i < 2 * half; ++i) row[i] = first[i * col];
    }
    for (int64_t axis = 1; axis < 3; ++axis) {
      const E* from = first + axis * strides[0];
      for (int64_t i : freqs[axis]) {
        row[i] = from[i * col];
        row[half + i] = from[(half + i) * col];
      }
    }
  }
}

}  // namespace

void mrope_tables(const Tensor& cos_sin, int64_t section_t, int64_t section_h, int64_t section_w, bool interleaved,
                  Tensor out) {
  check_cpu(cos_sin, "cos_sin");
  STD_TORCH_CHECK(cos_sin.dim() == 3 && cos_sin.size(0) == 3, "cos_sin must be [3, tokens, rope_dim]");
  float_dtype(cos_sin, "cos_sin");
  check_cpu(out, "out");
  check_same_dtype(out, cos_sin, "out", "cos_sin");
  const int64_t tokens = cos_sin.size(1), width = cos_sin.size(2);
  STD_TORCH_CHECK(
      out.dim() == 2 && out.size(0) == tokens && out.size(1) > 0 && out.size(1) % 2 == 0 && out.size(1) <= width,
      "out must be [", tokens, ", rope_dim] with rope_dim even and at most cos_sin's ", width, " columns");
  check_contiguous(out, "out");
  check_apart(out, cos_sin, "out", "cos_sin");
  const int64_t half = out.size(1) / 2;
  auto fits = [half](int64_t n) { return n >= 0 && n <= half; };  // each first: their sum could overflow
  STD_TORCH_CHECK(fits(section_t) && fits(section_h) && fits(section_w) && section_t + section_h + section_w == half,
                  "mrope sections must be >= 0 and sum to rope_dim / 2 = ", half, ", got [", section_t, ", ", section_h,
                  ", ", section_w, "]");
  std::vector<int64_t> freqs[3];  // the frequencies each axis gives
  for (int64_t i = 0; i < half; ++i) {
    int64_t axis = 0;
    if (interleaved)
      axis = i % 3 == 1 && i < 3 * section_h ? 1 : i % 3 == 2 && i < 3 * section_w ? 2 : 0;
    else
      axis = i < section_t ? 0 : i < section_t + section_h ? 1 : 2;
    freqs[axis].push_back(i);
  }
  const int64_t elem = int64_t(out.element_size());
  auto run = [&](auto element) {
    using E = decltype(element);
    const E* src = static_cast<const E*>(cos_sin.const_data_ptr());
    E* dst = static_cast<E*>(out.mutable_data_ptr());
    const int64_t strides[3] = {cos_sin.stride(0), cos_sin.stride(1), cos_sin.stride(2)};
    parallel_rows(tokens, 4 * half * elem,
                  [&](int64_t begin, int64_t end) { mrope_rows<E>(src, strides, half, freqs, dst, begin, end); });
  };
  if (elem == 2)
    run(uint16_t{});
  else
    run(uint32_t{});
}

}  // namespace sgl_npu_norm
