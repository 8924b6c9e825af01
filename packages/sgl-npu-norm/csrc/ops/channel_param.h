// A per-channel parameter (weight, bias, quant scale) as fp32 for the kernels, converted once per call.
#pragma once
#include <optional>
#include <vector>

#include "kernels/kernels.h"
#include "sgl_npu_core/checks.h"

namespace sgl_npu_norm {

using sgl_npu_core::DType;
using torch::stable::Tensor;

// `size` values as fp32 (plus `add`: 1 for Gemma's (1 + w)), in the order the kernels load values of dtype
// `order` in (sgl_npu_core::load16; memory order unless that is bf16); fp32 inputs in memory order are used in place.
// With `same_as` (the activations' dtype), a bf16 / fp16 parameter of that dtype and no `add` is not converted:
// same() points at it and get() is null (the kernel converts as it reads: half the bytes of an fp32 copy).
class ChannelParam {
 public:
  ChannelParam(const std::optional<Tensor>& t, int64_t size, const char* name, float add = 0.f,
               DType order = DType::f32, std::optional<DType> same_as = std::nullopt) {
    if (!t.has_value()) return;
    DType dt = sgl_npu_core::check_channel_param(*t, size, name);
    if (same_as && dt == *same_as && dt != DType::f32 && add == 0.f) {
      same_ = t->const_data_ptr();
      return;
    }
    if (dt == DType::f32 && add == 0.f && order != DType::bf16) {
      ptr_ = static_cast<const float*>(t->const_data_ptr());
      return;
    }
    buf_.resize(size);
    SGL_NPU_ISA_CALL(to_float32, dt, t->const_data_ptr(), buf_.data(), size, add, order);
    ptr_ = buf_.data();
  }
  const float* get() const { return ptr_; }
  const void* same() const { return same_; }

 private:
  std::vector<float> buf_;
  const float* ptr_ = nullptr;
  const void* same_ = nullptr;
};

}  // namespace sgl_npu_norm
