#!/usr/bin/env bash
# Checks on a CUDA machine (never part of CI): the Triton kernels run natively against the references
# (tests/test_triton.py and tests/test_rope.py on cuda tensors), then the GPU benchmarks. Uses the wheels in dist/ (`nox -s build`);
# the machine's python3 must already hold torch >= 2.10, triton, pytest and pytest-xdist.
#     OUT=/tmp/gpu bash ci/gpu_check.sh        # logs and norm-cuda.md|json|png land in $OUT
set -u
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
nvidia-smi -L
python3 -m pip install -q --no-deps --no-index --target /tmp/sgl_site dist/*.whl || exit 1
export PYTHONPATH=/tmp/sgl_site
python3 -c "import torch, triton, sgl_npu_norm; print('torch', torch.__version__, 'triton', triton.__version__)" || exit 1
cd packages/sgl-npu-norm
SGL_NPU_TEST_DEVICE=cuda timeout 240 python3 -m pytest -q -p no:cacheprovider -n 8 tests/test_triton.py \
    tests/test_rope.py >"$OUT/test_cuda.log" 2>&1
echo "tests on cuda: exit $?"
tail -n 15 "$OUT/test_cuda.log"
for bench in ${GPU_BENCHES:-norm rope}; do
    ops=""
    [ "$bench" = norm ] && ops="--ops rmsnorm,fused_add_rmsnorm,silu_and_mul,swiglu_quant"
    timeout 300 python3 "benchmarks/bench_$bench.py" --device cuda --dtypes bfloat16 $ops --out "$OUT" \
        2>"$OUT/bench_${bench}_cuda.log"
    echo "bench_$bench on cuda: exit $?"
done
