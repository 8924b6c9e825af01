#!/usr/bin/env bash
# Usage: tools/kernel_ab/kernel_ab.sh BASE_REV OP ROWS HIDDEN DTYPE [REPS]
#   OP: rmsnorm | fused_add_rmsnorm | silu_and_mul | swiglu_oai | swiglu_quant    DTYPE: bf16 | fp16 | fp32
# Compiles sgl-npu-norm's kernels at BASE_REV (git) and in the working tree, both as the avx512 variant, and times
# them against each other in one process (kernel_ab.cpp). Needs an x86-64 CPU with AVX512-BF16 and a GCC that
# targets it. Example: tools/kernel_ab/kernel_ab.sh HEAD~1 swiglu_quant 64 7168 bf16
set -euo pipefail
[ $# -ge 5 ] || { sed -n '2,6p' "$0" >&2; exit 2; }
root=$(git rev-parse --show-toplevel)
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
git -C "$root" archive "$1" packages/sgl-npu-core/csrc packages/sgl-npu-norm/csrc | tar -x -C "$base"
shift
# The avx512 variant's flags, as sgl_npu_add_op_library sets them (packages/sgl-npu-core/cmake/SglNpuCoreConfig.cmake).
flags=(-std=c++17 -O3 -fno-math-errno -Wno-psabi -mavx2 -mfma -mf16c -mavx512f -mavx512bw -mavx512dq -mavx512vl
       -mavx512bf16 -mprefer-vector-width=256 -DSGL_NPU_HAVE_AVX2=1 -DSGL_NPU_HAVE_AVX512=1)
objects=()
for tree in base head; do
  src=$([ $tree = base ] && echo "$base" || echo "$root")
  # The base's core helpers in a namespace of their own: an inline helper emitted out of line in both trees would
  # otherwise link as one copy for both sides.
  rename=$([ $tree = base ] && echo "-Dsgl_npu_core=sgl_npu_core_base" || true)
  for kernel in activation rmsnorm; do
    g++ "${flags[@]}" $rename -DSGL_NPU_ISA=$tree -I"$src/packages/sgl-npu-core/csrc/include" \
      -I"$src/packages/sgl-npu-norm/csrc" -c "$src/packages/sgl-npu-norm/csrc/kernels/$kernel.cpp" \
      -o "$base/${tree}_$kernel.o"
    objects+=("$base/${tree}_$kernel.o")
  done
done
if ! cmp -s "$base/packages/sgl-npu-norm/csrc/kernels/kernels.h" "$root/packages/sgl-npu-norm/csrc/kernels/kernels.h"; then
  echo "warning: kernels.h differs from the base; both are called with the working tree's argument structs" >&2
fi
g++ "${flags[@]}" -DSGL_NPU_ISA=head -I"$root/packages/sgl-npu-core/csrc/include" -I"$root/packages/sgl-npu-norm/csrc" \
  "$root/tools/kernel_ab/kernel_ab.cpp" "${objects[@]}" -o "$base/kernel_ab"
"$base/kernel_ab" "$@"
