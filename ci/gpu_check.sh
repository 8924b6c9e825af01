#!/usr/bin/env bash
# Checks on a CUDA machine (never part of CI): the attention kernels' launch variants timed
# (benchmarks/tune_triton.py), the Triton kernels run natively against the references (each package's device
# tests on cuda tensors), then the GPU benchmarks. Uses the wheels in dist/ (`nox -s build`); the machine's
# python3 must already hold torch >= 2.10, triton, pytest and pytest-xdist.
#     OUT=/tmp/gpu bash ci/gpu_check.sh        # logs and <bench>-cuda.md|json|png land in $OUT
#     GPU_TESTS=sgl-npu-attention GPU_BENCHES="sgl-npu-attention/bench_attention" bash ci/gpu_check.sh  # subsets
#     TUNE=0 TEST_TIMEOUT=150 BENCH_TIMEOUT=330 bash ci/gpu_check.sh    # to fit a short lease (seconds per step)
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi -L
python3 -m pip install -q --no-deps --no-index --target /tmp/sgl_site dist/*.whl || exit 1
export PYTHONPATH=/tmp/sgl_site
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" || exit 1

if [ "${TUNE:-1}" = 1 ]; then
    timeout 240 python3 packages/sgl-npu-attention/benchmarks/tune_triton.py --out "$OUT" >"$OUT/tune.log" 2>&1
    echo "tune_triton: exit $?"
fi

declare -A TEST_FILES=(
    [sgl-npu-norm]="tests/test_triton.py tests/test_rope.py"
    [sgl-npu-attention]="tests/test_triton.py tests/test_decode.py tests/test_extend.py tests/test_mla.py"
)
for pkg in ${GPU_TESTS:-sgl-npu-norm sgl-npu-attention}; do
    # shellcheck disable=SC2086
    (cd "packages/$pkg" && SGL_NPU_TEST_DEVICE=cuda timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -n 8 \
        ${TEST_FILES[$pkg]} >"$OUT/test_${pkg}_cuda.log" 2>&1)
    echo "$pkg tests on cuda: exit $?"
    tail -n 2 "$OUT/test_${pkg}_cuda.log"
done

# The ops that run Triton kernels on a GPU (the others run composed torch ops there).
declare -A BENCH_OPS=(
    [bench_norm]="rmsnorm,fused_add_rmsnorm,silu_and_mul,swiglu_quant"
    [bench_attention]="decode,extend,mla"
)
for bench in ${GPU_BENCHES:-sgl-npu-norm/bench_norm sgl-npu-norm/bench_rope sgl-npu-attention/bench_attention}; do
    name=${bench##*/}
    ops=${BENCH_OPS[$name]:-}
    timeout "${BENCH_TIMEOUT:-300}" python3 "packages/${bench%%/*}/benchmarks/$name.py" --device cuda --dtypes bfloat16 \
        ${ops:+--ops $ops} --out "$OUT" 2>"$OUT/${name}_cuda.log"
    echo "$bench on cuda: exit $?"
done
