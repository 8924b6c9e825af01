"""batch_matmul_transpose (CPU kernel; with SGL_NPU_TEST_DEVICE=cuda the vendor bmm) against the fp32 reference:
MLA's absorbed projections, ragged tails of every axis, strided views, out=."""

import pytest
import sgl_npu_attention as ops
import torch
from sgl_npu_attention import _accelerator
from sgl_npu_attention import reference as ref
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close

pytestmark = pytest.mark.usefixtures("on_test_device")


def _inputs(m, heads, k, n, dtype):
    # scaled so that outputs are O(1) and one absolute tolerance fits every K
    a = (torch.randn(m, heads, k) / max(k, 1) ** 0.5).to(dtype)
    return a, torch.randn(heads, k, n).to(dtype)


def _tol(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-2


# (M tokens, B heads, K, N): W_UK absorption (128 -> 512) and W_UV (512 -> 128) at decode and prefill sizes, and
# sizes that leave partial 6-row groups, 16-column panels and K blocks; (60, 16, 300, 48): bf16 tasks of 60 rows (6-row
# tiles of pairs), K in passes of 256 + 44, a 32-column strip and a 16-column one
SHAPES = [(1, 16, 128, 512), (16, 8, 512, 128), (37, 3, 33, 17), (5, 2, 300, 40), (130, 1, 64, 48), (1, 1, 1, 1)]
SHAPES += [(60, 16, 300, 48)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_against_reference(dtype, shape):
    a, b = _inputs(*shape, dtype)
    tol = _tol(dtype)
    assert_close(ops.batch_matmul_transpose(a, b), ref.batch_matmul_transpose(a, b), atol=tol, rtol=tol)


def test_strided_views_and_out():
    # a: a slice of q's heads' nope part (rows of a 192-wide head), b: every other head of a bigger weight
    q = torch.randn(9, 4, 192, dtype=torch.bfloat16)
    a = q[..., :128]
    b = torch.randn(8, 128, 64, dtype=torch.bfloat16)[::2]
    out = torch.full((9, 4, 80), 5.0, dtype=torch.bfloat16)[..., 8:72]
    assert ops.batch_matmul_transpose(a, b, out=out) is out
    assert_close(out, ref.batch_matmul_transpose(a, b), atol=0.05, rtol=1e-2)


def test_empty_reduction_gives_zeros():
    a, b = torch.randn(3, 2, 0), torch.randn(2, 0, 20)
    assert (ops.batch_matmul_transpose(a, b) == 0).all()


@pytest.mark.parametrize("shape", [(20, 5, 70, 33), (30, 4, 300, 64)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_exact_on_integers(dtype, shape):
    # small integers: every summation order gives the exact fp32 sum, so the output must be it rounded once to the
    # dtype (30x4x300x64 in bf16: pairs of k by vdpbf16ps, 6-row tiles, K in two passes)
    m, heads, k, n = shape
    a = torch.randint(-3, 4, (m, heads, k)).to(dtype)
    b = torch.randint(-3, 4, (heads, k, n)).to(dtype)
    want = torch.einsum("mhk,hkn->mhn", a.double(), b.double()).to(dtype)
    assert torch.equal(ops.batch_matmul_transpose(a, b), want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_device_path_matches(dtype):
    # the cuda / npu impl (torch.bmm), run here on CPU tensors
    a, b = _inputs(7, 3, 40, 24, dtype)
    out = torch.empty(7, 3, 24, dtype=dtype)
    _accelerator._bmm(a, b, out)
    tol = _tol(dtype)
    assert_close(out, ref.batch_matmul_transpose(a, b), atol=tol, rtol=tol)
