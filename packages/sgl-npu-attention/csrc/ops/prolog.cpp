// mla_preprocess's row-wise stages (the GEMMs run as torch matmuls in the Python op).
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"
#include "ops/ops.h"
#include "sgl_npu_core/parallel.h"

namespace sgl_npu_attention {

using namespace sgl_npu_core;

namespace {

float scalar_param(const Tensor& t, const char* name) { return *checked_vector<float>(t, 1, ScalarType::Float, name); }

const void* optional_param(const std::optional<Tensor>& t, int64_t size, const Tensor& x, const char* name) {
  if (!t.has_value()) return nullptr;
  check_channel_param(*t, size, name);
  check_same_dtype(*t, x, name, "x");
  return t->const_data_ptr();
}

void check_cache_rows(const Tensor& cache, const char* name, const Tensor& like, int64_t dim) {
  check_cpu(cache, name);
  STD_TORCH_CHECK(cache.dim() == 4 && cache.size(2) == 1 && cache.size(3) == dim, name,
                  " must be [num_blocks, page_size, 1, ", dim, "]");
  check_last_dim_contiguous(cache, name);
  check_same_dtype(cache, like, name, "latent");
}

// Tasks of about this many MACs: (token block, channel block) pairs, enough of them to share between cores.
constexpr int64_t kTaskMacs = 1 << 22;

}  // namespace

void mla_int8_matmul(const Tensor& codes, const Tensor& weight, const Tensor& descale, const Tensor& row_scale,
                     const std::optional<Tensor>& bias, Tensor out) {
  check_cpu(codes, "codes");
  check_dtype(codes, ScalarType::Char, "codes");
  STD_TORCH_CHECK(codes.dim() == 2, "codes must be [tokens, K], got ", codes.dim(), " dims");
  check_last_dim_contiguous(codes, "codes");
  check_cpu(weight, "weight");
  check_dtype(weight, ScalarType::Char, "weight");
  check_contiguous(weight, "weight");
  Int8MatmulArgs a{};
  a.m = codes.size(0);
  a.k = codes.size(1);
  STD_TORCH_CHECK(weight.dim() == 2 && weight.size(1) == a.k, "weight must be [N, ", a.k, "] (codes' K)");
  a.n = weight.size(0);
  a.descale = checked_vector<float>(descale, a.n, ScalarType::Float, "descale");
  a.row_scale = checked_vector<float>(row_scale, a.m, ScalarType::Float, "row_scale");
  a.bias = bias.has_value() ? checked_vector<int32_t>(*bias, a.n, ScalarType::Int, "bias") : nullptr;
  check_cpu(out, "out");
  a.dtype = float_dtype(out, "out");
  STD_TORCH_CHECK(out.dim() == 2 && out.size(0) == a.m && out.size(1) == a.n, "out must have shape [", a.m, ", ", a.n,
                  "]");
  check_last_dim_contiguous(out, "out");
  check_disjoint(out, "out");
  check_written_apart({{&out, "out"}}, {{&codes, "codes"},
                                        {&weight, "weight"},
                                        {&descale, "descale"},
                                        {&row_scale, "row_scale"},
                                        {given(bias), "bias"}});
  if (a.m == 0 || a.n == 0) return;
  a.codes = static_cast<const int8_t*>(codes.const_data_ptr());
  a.codes_stride = codes.stride(0);
  a.weight = static_cast<const int8_t*>(weight.const_data_ptr());
  a.out = out.mutable_data_ptr();
  a.out_stride = out.stride(0);
  // token blocks of up to 64 (their int8 rows stay in L2 while a channel block's weights stream past)
  a.m_block = std::min<int64_t>(a.m, 64);
  a.n_block = std::clamp<int64_t>(kTaskMacs / std::max<int64_t>(a.m_block * a.k, 1), 2, a.n);
  a.n_block += a.n_block % 2;
  const int64_t tasks = ((a.m + a.m_block - 1) / a.m_block) * ((a.n + a.n_block - 1) / a.n_block);
  parallel_rows(tasks, 1 << 20, [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(int8_matmul, a, begin, end); });
}

void mla_quant_rows(const Tensor& x, const std::optional<Tensor>& gamma, const std::optional<Tensor>& beta, double eps,
                    const std::optional<Tensor>& quant_scale, const std::optional<Tensor>& quant_offset, Tensor codes,
                    Tensor row_scale) {
  check_cpu(x, "x");
  STD_TORCH_CHECK(x.dim() == 2, "x must be [rows, cols], got ", x.dim(), " dims");
  check_last_dim_contiguous(x, "x");
  QuantRowsArgs a{};
  a.dtype = float_dtype(x, "x");
  const int64_t rows = x.size(0);
  a.cols = x.size(1);
  STD_TORCH_CHECK(!beta.has_value() || gamma.has_value(), "beta needs gamma");
  a.gamma = optional_param(gamma, a.cols, x, "gamma");
  a.beta = optional_param(beta, a.cols, x, "beta");
  a.eps = float(eps);
  STD_TORCH_CHECK(quant_scale.has_value() == quant_offset.has_value(), "quant_scale and quant_offset go together");
  a.per_tensor = quant_scale.has_value();
  if (a.per_tensor) {
    a.scale = scalar_param(*quant_scale, "quant_scale");
    a.offset = scalar_param(*quant_offset, "quant_offset");
    // codes are round(x / scale + offset): a zero, infinite or NaN scale would give NaN codes (undefined as int8)
    STD_TORCH_CHECK(std::isfinite(a.scale) && a.scale != 0.f, "quant_scale must be finite and nonzero, got ", a.scale);
    STD_TORCH_CHECK(std::isfinite(a.offset), "quant_offset must be finite, got ", a.offset);
  }
  check_cpu(codes, "codes");
  check_dtype(codes, ScalarType::Char, "codes");
  STD_TORCH_CHECK(codes.dim() == 2 && codes.size(0) == rows && codes.size(1) == a.cols, "codes must have shape [", rows,
                  ", ", a.cols, "]");
  check_last_dim_contiguous(codes, "codes");
  check_disjoint(codes, "codes");
  checked_vector<float>(row_scale, rows, ScalarType::Float, "row_scale");
  check_written_apart({{&codes, "codes"}, {&row_scale, "row_scale"}}, {{&x, "x"},
                                                                       {given(gamma), "gamma"},
                                                                       {given(beta), "beta"},
                                                                       {given(quant_scale), "quant_scale"},
                                                                       {given(quant_offset), "quant_offset"}});
  a.x = x.const_data_ptr();
  a.x_stride = x.stride(0);
  a.codes = static_cast<int8_t*>(codes.mutable_data_ptr());
  a.codes_stride = codes.stride(0);
  a.row_scale = const_cast<float*>(checked_vector<float>(row_scale, rows, ScalarType::Float, "row_scale"));
  parallel_rows(rows, a.cols * 4, [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(quant_rows, a, begin, end); });
}

void mla_cache_write(const Tensor& latent, const Tensor& k_pe, const Tensor& gamma, const Tensor& cos,
                     const Tensor& sin, const Tensor& slotmapping, double eps, Tensor kv_cache, Tensor kv_cache_rope) {
  CacheWriteArgs a{};
  for (auto [t, name] : {std::pair{&latent, "latent"}, {&k_pe, "k_pe"}, {&cos, "cos"}, {&sin, "sin"}}) {
    check_cpu(*t, name);
    STD_TORCH_CHECK(t->dim() == 2, name, " must be [tokens, dim], got ", t->dim(), " dims");
    check_last_dim_contiguous(*t, name);
    check_same_dtype(*t, latent, name, "latent");
  }
  a.dtype = float_dtype(latent, "latent");
  const int64_t rows = latent.size(0);
  a.latent_dim = latent.size(1);
  a.rope_dim = k_pe.size(1);
  STD_TORCH_CHECK(a.rope_dim % 2 == 0, "k_pe's rope dim must be even, got ", a.rope_dim);
  for (auto [t, name] : {std::pair{&k_pe, "k_pe"}, {&cos, "cos"}, {&sin, "sin"}})
    STD_TORCH_CHECK(t->size(0) == rows && t->size(1) == a.rope_dim, name, " must have shape [", rows, ", ", a.rope_dim,
                    "]");
  check_channel_param(gamma, a.latent_dim, "gamma");
  check_same_dtype(gamma, latent, "gamma", "latent");
  check_cache_rows(kv_cache, "kv_cache", latent, a.latent_dim);
  check_cache_rows(kv_cache_rope, "kv_cache_rope", latent, a.rope_dim);
  STD_TORCH_CHECK(kv_cache_rope.size(0) == kv_cache.size(0) && kv_cache_rope.size(1) == kv_cache.size(1),
                  "kv_cache_rope must have kv_cache's blocks and page size");
  // Rows are written by several threads: every slot's row must be its own memory, in both caches.
  check_disjoint(kv_cache, "kv_cache");
  check_disjoint(kv_cache_rope, "kv_cache_rope");
  check_apart(kv_cache_rope, kv_cache, "kv_cache_rope", "kv_cache");
  a.slots = checked_vector<int32_t>(slotmapping, rows, ScalarType::Int, "slotmapping");
  // Every input apart from the caches: the slots (checked once, read again per row) and gamma included.
  for (auto [t, name] : {std::pair{&latent, "latent"},
                         {&k_pe, "k_pe"},
                         {&cos, "cos"},
                         {&sin, "sin"},
                         {&slotmapping, "slotmapping"},
                         {&gamma, "gamma"}}) {
    check_apart(kv_cache, *t, "kv_cache", name);
    check_apart(kv_cache_rope, *t, "kv_cache_rope", name);
  }
  a.page_size = kv_cache.size(1);
  const int64_t slots = kv_cache.size(0) * a.page_size;
  for (int64_t t = 0; t < rows; ++t)  // all slots are checked before any row is written
    STD_TORCH_CHECK(0 <= a.slots[t] && a.slots[t] < slots, "slotmapping[", t, "] = ", a.slots[t],
                    " is not a slot of the cache (", slots, " slots)");
  a.latent = latent.const_data_ptr();
  a.latent_stride = latent.stride(0);
  a.k_pe = k_pe.const_data_ptr();
  a.k_pe_stride = k_pe.stride(0);
  a.gamma = gamma.const_data_ptr();
  a.eps = float(eps);
  a.cos = cos.const_data_ptr();
  a.cos_stride = cos.stride(0);
  a.sin = sin.const_data_ptr();
  a.sin_stride = sin.stride(0);
  a.kv_cache = kv_cache.mutable_data_ptr();
  a.kv_block_stride = kv_cache.stride(0);
  a.kv_token_stride = kv_cache.stride(1);
  a.kv_cache_rope = kv_cache_rope.mutable_data_ptr();
  a.rope_block_stride = kv_cache_rope.stride(0);
  a.rope_token_stride = kv_cache_rope.stride(1);
  parallel_rows(rows, (a.latent_dim + a.rope_dim) * 8,
                [&a](int64_t begin, int64_t end) { SGL_NPU_ISA_CALL(cache_write, a, begin, end); });
}

}  // namespace sgl_npu_attention
