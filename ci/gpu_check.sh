#!/usr/bin/env bash
# Checks on a CUDA machine (never part of CI): the Triton kernels run natively against the references (each
# package's device tests on cuda tensors), then the GPU benchmarks. Uses the wheels in dist/ (`nox -s build`);
# the machine's python3 must already hold torch >= 2.10, triton, pytest and pytest-xdist.
#     OUT=/tmp/gpu bash ci/gpu_check.sh        # logs and <bench>-cuda.md|json|png land in $OUT
#     GPU_BENCHES="sgl-npu-attention/bench_attention" bash ci/gpu_check.sh   # a subset of the benchmarks
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi -L
python3 -m pip install -q --no-deps --no-index --target /tmp/sgl_site dist/*.whl || exit 1
export PYTHONPATH=/tmp/sgl_site
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" || exit 1

device_tests() {  # package, test files
    local pkg=$1
    shift
    (cd "packages/$pkg" && SGL_NPU_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -p no:cacheprovider -n 8 "$@" \
        >"$OUT/test_${pkg}_cuda.log" 2>&1)
    echo "$pkg tests on cuda: exit $?"
    tail -n 2 "$OUT/test_${pkg}_cuda.log"
}
device_tests sgl-npu-norm tests/test_triton.py tests/test_rope.py
device_tests sgl-npu-attention tests/test_triton.py tests/test_decode.py

for bench in ${GPU_BENCHES:-sgl-npu-norm/bench_norm sgl-npu-norm/bench_rope sgl-npu-attention/bench_attention}; do
    ops=""
    [ "${bench##*/}" = bench_norm ] && ops="--ops rmsnorm,fused_add_rmsnorm,silu_and_mul,swiglu_quant"
    timeout 300 python3 "packages/${bench%%/*}/benchmarks/${bench##*/}.py" --device cuda --dtypes bfloat16 $ops \
        --out "$OUT" 2>"$OUT/${bench##*/}_cuda.log"
    echo "$bench on cuda: exit $?"
done
