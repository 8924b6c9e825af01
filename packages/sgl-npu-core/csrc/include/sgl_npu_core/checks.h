// Argument checks for op entry points (the only layer that sees torch). A failed check throws through
// the stable ABI and reaches Python as a RuntimeError whose message names the argument.
#pragma once
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <utility>
#include <vector>

#include "sgl_npu_core/dtype.h"

namespace sgl_npu_core {

using torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;

inline const char* dtype_name(ScalarType t) {
  switch (t) {
    case ScalarType::Float:
      return "float32";
    case ScalarType::Half:
      return "float16";
    case ScalarType::BFloat16:
      return "bfloat16";
    case ScalarType::Char:
      return "int8";
    case ScalarType::Int:
      return "int32";
    case ScalarType::Long:
      return "int64";
    case ScalarType::Short:
      return "int16";
    case ScalarType::Byte:
      return "uint8";
    case ScalarType::Bool:
      return "bool";
    case ScalarType::Double:
      return "float64";
    case ScalarType::Float8_e4m3fn:
      return "float8_e4m3fn";
    case ScalarType::Float8_e5m2:
      return "float8_e5m2";
    case ScalarType::ComplexFloat:
      return "complex64";
    case ScalarType::ComplexDouble:
      return "complex128";
    default:
      return "another dtype";
  }
}

inline bool is_float_dtype(ScalarType t) {
  return t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16;
}

// The kernel-side dtype of a float32/float16/bfloat16 tensor.
inline DType float_dtype(const Tensor& t, const char* name) {
  ScalarType s = t.scalar_type();
  STD_TORCH_CHECK(is_float_dtype(s), name, " must be float32, float16 or bfloat16, got ", dtype_name(s));
  return s == ScalarType::Float ? DType::f32 : s == ScalarType::Half ? DType::f16 : DType::bf16;
}

inline void check_cpu(const Tensor& t, const char* name) {
  STD_TORCH_CHECK(t.defined(), name, " must be a tensor, got None");  // None for a Tensor argument arrives undefined
  STD_TORCH_CHECK(t.is_cpu(), name, " must be a CPU tensor for the CPU kernel");
}

inline void check_dtype(const Tensor& t, ScalarType want, const char* name) {
  STD_TORCH_CHECK(t.scalar_type() == want, name, " must be ", dtype_name(want), ", got ", dtype_name(t.scalar_type()));
}

inline void check_contiguous(const Tensor& t, const char* name) {
  STD_TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

inline void check_last_dim_contiguous(const Tensor& t, const char* name) {
  const int64_t nd = t.dim();
  STD_TORCH_CHECK(nd == 0 || t.stride(nd - 1) == 1 || t.size(nd - 1) == 1, name, " must be contiguous in its last dim");
}

// A 1-D contiguous CPU tensor of `size` elements of `dtype`; returns its data.
template <class T>
inline const T* checked_vector(const Tensor& t, int64_t size, ScalarType dtype, const char* name) {
  check_cpu(t, name);
  check_dtype(t, dtype, name);
  STD_TORCH_CHECK(t.dim() == 1 && t.size(0) == size, name, " must have shape [", size, "]");
  check_contiguous(t, name);
  return static_cast<const T*>(t.const_data_ptr());
}

// A per-channel parameter: 1-D, `size` elements, contiguous, float, on the CPU.
inline DType check_channel_param(const Tensor& t, int64_t size, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() == 1 && t.size(0) == size, name, " must have shape [", size, "], got ", t.dim(),
                  " dims with last size ", t.dim() ? t.size(t.dim() - 1) : 0);
  check_contiguous(t, name);
  return float_dtype(t, name);
}

// A tensor read as `rows` rows of `cols` contiguous elements, each row `row_stride` elements apart.
struct Rows {
  int64_t rows;
  int64_t cols;
  int64_t row_stride;
};

// Views `t` as rows over its last dim: the last dim must be contiguous and the leading dims must
// collapse into one row stride (any contiguous tensor, or a row-slice of one).
inline Rows as_rows(const Tensor& t, const char* name) {
  check_cpu(t, name);
  STD_TORCH_CHECK(t.dim() >= 1, name, " must have at least 1 dim");
  const int64_t nd = t.dim();
  const int64_t cols = t.size(nd - 1);
  STD_TORCH_CHECK(cols > 0, name, " must have a non-empty last dim");
  check_last_dim_contiguous(t, name);
  int64_t rows = 1;
  for (int64_t d = 0; d < nd - 1; ++d) rows *= t.size(d);
  if (rows == 0) return Rows{0, cols, cols};  // no row to place (an empty dim's neighbours may have any stride)
  int64_t row_stride = cols;
  int64_t expect = -1;  // stride the next leading dim must have (in elements)
  for (int64_t d = nd - 2; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (expect < 0) {
      row_stride = t.stride(d);
      STD_TORCH_CHECK(row_stride >= cols, name, " has overlapping rows (stride ", row_stride, ")");
    } else {
      STD_TORCH_CHECK(t.stride(d) == expect, name, " has leading dims that do not collapse into rows");
    }
    expect = t.stride(d) * t.size(d);
  }
  return Rows{rows, cols, row_stride};
}

// An output whose items (runs of its last dim) are all distinct memory: with the leading dims ordered by stride
// (size-1 dims skipped), each must clear everything inside it, as the Python check_disjoint.
inline void check_disjoint(const Tensor& t, const char* name) {
  if (t.dim() == 0) return;
  std::vector<std::pair<int64_t, int64_t>> dims;  // (stride, size) of the leading dims that repeat
  for (int64_t d = 0; d + 1 < t.dim(); ++d)
    if (t.size(d) > 1) dims.emplace_back(t.stride(d), t.size(d));
  std::sort(dims.begin(), dims.end());
  int64_t inner = t.size(t.dim() - 1);
  for (auto [stride, size] : dims) {
    STD_TORCH_CHECK(stride >= inner, name, " must not overlap itself");
    inner += (size - 1) * stride;
  }
}

// The bytes [first, last) a tensor with non-negative strides spans (first == last when it is empty).
inline std::pair<uintptr_t, uintptr_t> byte_span(const Tensor& t) {
  const uintptr_t first = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  int64_t last = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) == 0) return {first, first};
    last += (t.size(d) - 1) * t.stride(d);
  }
  return {first, first + uintptr_t((last + 1) * int64_t(t.element_size()))};
}

// A tensor's elements as evenly spaced runs of contiguous bytes: `rows` runs of `width` bytes, `stride` bytes
// apart (a column slice of a matrix, a contiguous tensor: one run per row or one in all).
struct ByteRows {
  int64_t first, rows, stride, width;
};

// `t` as ByteRows, or nothing where its elements do not form such runs (an expanded or permuted view).
inline std::optional<ByteRows> byte_rows(const Tensor& t) {
  if (t.dim() == 0 || t.numel() == 0) return std::nullopt;
  int64_t d = t.dim() - 1, width = 1;  // elements: the dense trailing dims make a run
  for (; d >= 0 && (t.size(d) == 1 || t.stride(d) == width); --d) width *= t.size(d);
  int64_t rows = 1, stride = width, expect = -1;  // the dims left must collapse into one stride
  for (; d >= 0; --d) {
    if (t.size(d) == 1) continue;
    if (expect >= 0 && t.stride(d) != expect) return std::nullopt;
    if (expect < 0) stride = t.stride(d);
    rows *= t.size(d);
    expect = t.stride(d) * t.size(d);
  }
  if (stride < width) return std::nullopt;
  const int64_t elem = int64_t(t.element_size());
  return ByteRows{int64_t(reinterpret_cast<uintptr_t>(t.const_data_ptr())), rows, stride * elem, width * elem};
}

// Whether two sets of runs share a byte. Runs of one stride are compared run by run: row i of a and row j of b
// meet where -b.width < d + (j - i) * stride < a.width (d: b's first byte past a's), so the least j - i above the
// lower bound decides. Otherwise (conservatively) their spans are compared.
inline bool share_memory(const ByteRows& a, const ByteRows& b) {
  if (a.rows <= 0 || b.rows <= 0 || a.width <= 0 || b.width <= 0) return false;
  // Runs that overlap each other (a broadcast qkv: stride 0) have only their spans to compare.
  const bool runs = (a.rows == 1 || a.stride >= a.width) && (b.rows == 1 || b.stride >= b.width);
  if (runs && (a.rows > 1 || b.rows > 1) && (a.rows == 1 || b.rows == 1 || a.stride == b.stride)) {
    const int64_t stride = a.rows > 1 ? a.stride : b.stride, d = b.first - a.first;
    const int64_t low = -b.width - d;  // j - i must exceed low / stride
    int64_t k = (low >= 0 ? low / stride : -((-low + stride - 1) / stride)) + 1;
    k = std::max(k, 1 - a.rows);
    return k <= b.rows - 1 && d + k * stride < a.width;
  }
  return a.first < b.first + (b.rows - 1) * b.stride + b.width && b.first < a.first + (a.rows - 1) * a.stride + a.width;
}
inline bool same_rows(const ByteRows& a, const ByteRows& b) {
  return a.first == b.first && a.rows == b.rows && a.width == b.width && (a.rows == 1 || a.stride == b.stride);
}
inline bool share_memory(const Tensor& a, const Tensor& b) {
  const auto ra = byte_rows(a), rb = byte_rows(b);
  if (ra && rb) return share_memory(*ra, *rb);
  const auto [a0, a1] = byte_span(a);
  const auto [b0, b1] = byte_span(b);
  return a0 != a1 && b0 != b1 && a0 < b1 && b0 < a1;
}

// An output must not share memory with an input it is computed from.
inline void check_apart(const Tensor& out, const Tensor& in, const char* out_name, const char* in_name) {
  STD_TORCH_CHECK(!share_memory(out, in), out_name, " must not overlap ", in_name);
}

// Each written tensor apart from every read one and from the other written ones (null entries: absent optional
// tensors): for ops that check their indices once and read them again while writing.
using NamedTensor = std::pair<const Tensor*, const char*>;
inline const Tensor* given(const std::optional<Tensor>& t) { return t.has_value() ? &*t : nullptr; }
inline void check_written_apart(std::initializer_list<NamedTensor> written, std::initializer_list<NamedTensor> read) {
  for (auto w = written.begin(); w != written.end(); ++w) {
    if (!w->first) continue;
    for (auto o = w + 1; o != written.end(); ++o)
      if (o->first) check_apart(*w->first, *o->first, w->second, o->second);
    for (const auto& [r, r_name] : read)
      if (r) check_apart(*w->first, *r, w->second, r_name);
  }
}

// An output that is either exactly an input (the same view: in place, each element read before it is written) or
// apart from it; a partial overlap would feed rows already written back in as input.
inline void check_same_or_apart(const Tensor& out, const Tensor& in, const char* out_name, const char* in_name) {
  bool same = out.const_data_ptr() == in.const_data_ptr() && out.dim() == in.dim();
  for (int64_t d = 0; same && d < out.dim(); ++d)  // a dim of one element has no stride to agree on
    same = out.size(d) == in.size(d) && (out.size(d) == 1 || out.stride(d) == in.stride(d));
  if (!same) check_apart(out, in, out_name, in_name);
}

inline void check_same_rows(const Rows& a, const Rows& b, const char* a_name, const char* b_name) {
  STD_TORCH_CHECK(a.rows == b.rows && a.cols == b.cols, b_name, " must have the shape of ", a_name, " (", a.rows,
                  " rows x ", a.cols, "), got ", b.rows, " x ", b.cols);
}

inline void check_same_dtype(const Tensor& t, const Tensor& ref, const char* name, const char* ref_name) {
  STD_TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have the dtype of ", ref_name, " (",
                  dtype_name(ref.scalar_type()), "), got ", dtype_name(t.scalar_type()));
}

}  // namespace sgl_npu_core
