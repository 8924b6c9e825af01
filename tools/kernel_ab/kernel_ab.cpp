// Times one sgl-npu-norm CPU kernel at two revisions in one process: BASE's kernels compiled into namespace `base`,
// the working tree's into `head`, called alternately rep by rep on the same 64-byte aligned buffers, on one thread,
// timed by rdtsc. Torch-level timings on the project's VM drift with its shared hosts (docs/design.md); this does not.
// Inputs are normal values; outputs are written with cached stores and no next-row requests (the paths ops take
// below 8 MB), so compare shapes that fit the caches.
// Built and run by kernel_ab.sh; prints rdtsc cycles per 8 output values (median over reps of the best of 3 calls).
#include <x86intrin.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace sgl_npu_norm {
#define SGL_AB_DECLARE(ns)                                          \
  namespace ns {                                                    \
  void rmsnorm_rows(const NormArgs&, int64_t, int64_t);             \
  void glu_rows(const GluArgs&, int64_t, int64_t);                  \
  void swiglu_quant_rows(const SwigluQuantArgs&, int64_t, int64_t); \
  }
SGL_AB_DECLARE(base)
SGL_AB_DECLARE(head)
}  // namespace sgl_npu_norm

namespace {

using namespace sgl_npu_norm;
using sgl_npu_core::DType;

struct Buffer {  // 64-byte aligned, as torch's CPU allocator gives
  explicit Buffer(size_t bytes) : p(static_cast<char*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64))), n(bytes) {}
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  char* p;
  size_t n;
};

// Normal values (sigma 2) stored as `dtype`.
void fill(Buffer& b, DType dtype, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.f, 2.f);
  const size_t elem = dtype == DType::f32 ? 4 : 2;
  for (size_t i = 0; i < b.n / elem; ++i) {
    const float f = normal(rng);
    if (dtype == DType::f32) {
      std::memcpy(b.p + 4 * i, &f, 4);
    } else if (dtype == DType::bf16) {
      uint32_t u;
      std::memcpy(&u, &f, 4);
      const uint16_t h = uint16_t(u >> 16);
      std::memcpy(b.p + 2 * i, &h, 2);
    } else {
      const _Float16 h = static_cast<_Float16>(f);
      std::memcpy(b.p + 2 * i, &h, 2);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s OP ROWS HIDDEN DTYPE [REPS]\n", argv[0]);
    return 2;
  }
  const std::string op = argv[1], dt = argv[4];
  const int64_t rows = std::atoll(argv[2]), d = std::atoll(argv[3]);
  const int reps = argc > 5 ? std::atoi(argv[5]) : 31;
  const DType dtype = dt == "bf16" ? DType::bf16 : dt == "fp16" ? DType::f16 : DType::f32;
  const size_t elem = dtype == DType::f32 ? 4 : 2;
  if (rows <= 0 || d <= 0 || reps <= 0 || (dt != "bf16" && dt != "fp16" && dt != "fp32")) {
    std::fprintf(stderr, "ROWS, HIDDEN and REPS must be positive and DTYPE bf16, fp16 or fp32\n");
    return 2;
  }
  std::mt19937 rng(1);
  const bool gated = op == "silu_and_mul" || op == "swiglu_oai" || op == "swiglu_quant";
  Buffer x(rows * d * elem * (gated ? 2 : 1)), residual(rows * d * elem), weight(d * elem);
  Buffer out(rows * d * (op == "swiglu_quant" ? 1 : elem)), scale(rows * 4);
  Buffer x0(x.n), residual0(residual.n);
  fill(x, dtype, rng);
  fill(residual, dtype, rng);
  fill(weight, dtype, rng);
  std::memcpy(x0.p, x.p, x.n);
  std::memcpy(residual0.p, residual.p, residual.n);

  std::function<void(bool)> call;         // the kernel of base (true) or head (false)
  std::function<void()> restore = [] {};  // the inputs of an in-place op, before each call
  if (op == "rmsnorm" || op == "fused_add_rmsnorm") {
    NormArgs a{};
    a.dtype = dtype, a.hidden = d, a.eps = 1e-6f, a.x = x.p, a.x_stride = d, a.out = out.p, a.out_stride = d;
    if (dtype == DType::f32)
      a.weight = reinterpret_cast<const float*>(weight.p);
    else
      a.weight_same = weight.p;
    if (op == "fused_add_rmsnorm") {  // in place: restore() gives every call the same inputs
      a.residual = residual.p, a.residual_stride = d, a.sum = residual.p, a.sum_stride = d, a.out = x.p;
      restore = [&x, &x0, &residual, &residual0] {
        std::memcpy(x.p, x0.p, x.n);
        std::memcpy(residual.p, residual0.p, residual.n);
      };
    }
    call = [a, rows](bool b) { b ? base::rmsnorm_rows(a, 0, rows) : head::rmsnorm_rows(a, 0, rows); };
  } else if (op == "silu_and_mul" || op == "swiglu_oai") {
    GluArgs a{};
    a.dtype = dtype, a.d = d, a.x = x.p, a.x_stride = 2 * d, a.out = out.p, a.out_stride = d;
    a.kind = op == "silu_and_mul" ? GluKind::silu_and_mul : GluKind::swiglu_oai, a.alpha = 1.702f, a.limit = 7.f;
    call = [a, rows](bool b) { b ? base::glu_rows(a, 0, rows) : head::glu_rows(a, 0, rows); };
  } else if (op == "swiglu_quant") {
    SwigluQuantArgs a{
        dtype, d, false, 7.f, x.p, 2 * d, reinterpret_cast<int8_t*>(out.p), d, reinterpret_cast<float*>(scale.p)};
    call = [a, rows](bool b) { b ? base::swiglu_quant_rows(a, 0, rows) : head::swiglu_quant_rows(a, 0, rows); };
  } else {
    std::fprintf(stderr, "OP must be rmsnorm, fused_add_rmsnorm, silu_and_mul, swiglu_oai or swiglu_quant\n");
    return 2;
  }

  // Everything each writes (out or x, residual for the in-place op, scale), compared byte by byte.
  std::vector<const Buffer*> written = {op == "fused_add_rmsnorm" ? &x : &out, &scale};
  if (op == "fused_add_rmsnorm") written.push_back(&residual);
  std::vector<std::vector<char>> from_base;
  restore();
  call(true);
  for (const Buffer* b : written) from_base.emplace_back(b->p, b->p + b->n);
  restore();
  call(false);
  size_t differ = 0;
  for (size_t k = 0; k < written.size(); ++k)
    for (size_t i = 0; i < written[k]->n; ++i) differ += from_base[k][i] != written[k]->p[i];
  std::printf("%s %lldx%lld %s: %zu written bytes differ between base and head\n", op.c_str(), (long long)rows,
              (long long)d, dt.c_str(), differ);

  std::vector<double> cycles[2];
  for (int r = 0; r < reps; ++r)
    for (int which = 0; which < 2; ++which) {
      uint64_t best = ~0ull;
      for (int k = 0; k < 3; ++k) {
        restore();
        const uint64_t t = __rdtsc();
        call(which == 0);
        best = std::min<uint64_t>(best, __rdtsc() - t);
      }
      cycles[which].push_back(double(best) / (double(rows) * double(d) / 8));
    }
  for (auto& c : cycles) std::sort(c.begin(), c.end());
  const double b = cycles[0][reps / 2], h = cycles[1][reps / 2];
  std::printf("rdtsc cycles per 8 values: base %.2f, head %.2f (head %.3fx faster)\n", b, h, b / h);
  return 0;
}
