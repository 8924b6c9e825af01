"""The shared test helpers and Python argument checks behave as documented."""

import pytest
import torch
from sgl_npu_core import checks
from sgl_npu_core.library import load_op_library
from sgl_npu_core.testing import assert_close, rel_error, tolerance


def test_assert_close_uses_dtype_tolerances():
    e = torch.ones(16, dtype=torch.bfloat16)
    assert_close(e + 0.0078, e)  # within one bf16 ulp of 1.0
    with pytest.raises(AssertionError, match="differ"):
        assert_close(e * 1.1, e)
    assert tolerance(torch.float32) < tolerance(torch.float16) < tolerance(torch.bfloat16)


def test_assert_close_checks_shape_dtype_and_relative_error():
    with pytest.raises(AssertionError, match="shape"):
        assert_close(torch.ones(3), torch.ones(4))
    with pytest.raises(AssertionError, match="dtype"):
        assert_close(torch.ones(3), torch.ones(3, dtype=torch.float64))
    with pytest.raises(AssertionError, match="relative error"):
        assert_close(torch.ones(4) * 1.01, torch.ones(4), atol=1, rtol=1, max_rel_error=1e-3)
    with pytest.raises(AssertionError):
        assert_close(torch.tensor([1, 2], dtype=torch.int8), torch.tensor([1, 3], dtype=torch.int8))


def test_rel_error():
    assert rel_error(torch.tensor([3.0, 4.0]), torch.tensor([3.0, 4.0])) == 0
    assert rel_error(torch.tensor([0.0, 0.0]), torch.tensor([3.0, 4.0])) == pytest.approx(1.0)


def test_row_stride_matches_the_cpp_rule():
    base = torch.zeros(4, 10)
    assert checks.row_stride(base[:, 2:8], "x") == 10
    assert checks.row_stride(torch.zeros(1, 1, 7), "x") == 7
    assert checks.row_stride(torch.zeros(2, 3, 5)[:, :, :], "x") == 5
    assert checks.row_stride(torch.zeros(2, 6, 5)[:, ::2], "x") == 10  # still evenly spaced rows
    with pytest.raises(RuntimeError, match="x has leading dims"):
        checks.row_stride(torch.zeros(2, 7, 5)[:, :3], "x")
    with pytest.raises(RuntimeError, match="x must be contiguous in its last dim"):
        checks.check_rows(torch.zeros(5, 4).t(), "x")
    with pytest.raises(RuntimeError, match="w must be float32"):
        checks.check_float(torch.zeros(2, dtype=torch.int32), "w")


def test_load_op_library_reports_a_missing_library(tmp_path):
    with pytest.raises(ImportError, match="missing"):
        load_op_library(str(tmp_path / "__init__.py"))
