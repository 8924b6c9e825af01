"""The shared test helpers and Python argument checks behave as documented."""

import pytest
import torch
from sgl_npu_core import checks
from sgl_npu_core.library import load_op_library
from sgl_npu_core.testing import assert_close, empty_at, rel_error, tolerance


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


def _bytes_of(t: torch.Tensor) -> set[int]:
    """Every byte address an element of ``t`` covers (brute force)."""
    offsets = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(t.shape, t.stride(), strict=True):
        offsets = offsets.unsqueeze(-1) + torch.arange(size) * stride
    first = t.data_ptr() - t.storage_offset() * t.element_size()
    starts = first + (offsets.flatten() + t.storage_offset()) * t.element_size()
    return {int(s) + b for s in starts for b in range(t.element_size())}


def _random_view(buf: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A 1- to 3-D view of ``buf``: rows of a random stride (below, at or past the width), column slices, expanded
    or transposed now and then."""
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=g))  # noqa: E731
    kind = r(0, 5)
    rows, cols = r(1, 5), r(1, 6)
    stride = r(max(cols - 1, 1), cols + 4)
    if kind == 0:
        return buf[r(0, 8) :][: r(1, 20)]
    if kind == 4:  # heads: [rows, 2, cols] with a head stride of cols or more
        head = r(cols, cols + 2)
        shape, strides = (rows, 2, cols), (2 * head + r(0, 3), head, 1)
    elif kind == 5:  # expanded or transposed
        shape, strides = ((rows, cols), (0, 1)) if r(0, 1) else ((cols, rows), (1, stride))
    else:
        shape, strides = (rows, cols), (stride, 1)
    need = sum((n - 1) * s for n, s in zip(shape, strides, strict=True)) + 1
    offset = r(0, buf.numel() - need)
    return buf.as_strided(shape, strides, offset)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8], ids=str)
def test_share_memory_matches_brute_force(dtype):
    # runs of one stride are compared exactly; other pairs only where their spans meet (a conservative answer)
    g = torch.Generator().manual_seed(0)
    buf = torch.zeros(160, dtype=dtype)
    exact = 0
    for i in range(3000):
        a, b = _random_view(buf, g), _random_view(buf, g)
        if i % 2 and a.dim() == 2 and a.stride(1) == 1 and a.stride(0) > 0:  # b interleaved with a's rows
            rows, cols = (
                int(torch.randint(1, 6, (), generator=g)),
                int(torch.randint(1, a.stride(0) + 1, (), generator=g)),
            )
            shift = int(torch.randint(-2 * a.stride(0), 2 * a.stride(0) + 1, (), generator=g))
            offset = min(max(a.storage_offset() + shift, 0), buf.numel() - (rows - 1) * a.stride(0) - cols)
            b = buf.as_strided((rows, cols), (a.stride(0), 1), offset)
        truth = bool(_bytes_of(a) & _bytes_of(b))
        got = checks._share_memory(a, b)
        ra, rb = checks._byte_rows(a), checks._byte_rows(b)
        if ra and rb and (ra[1] == 1 or rb[1] == 1 or ra[2] == rb[2]):
            exact += 1
            assert got == truth, (a.shape, a.stride(), a.storage_offset(), b.shape, b.stride(), b.storage_offset())
        else:
            assert got or not truth  # never misses a shared byte
    assert exact > 1500


def test_as_int_takes_integers_only():
    import numpy as np

    for value in (7, np.int64(7), torch.tensor(7)):
        assert checks.as_int(value, "n") == 7 and type(checks.as_int(value, "n")) is int
    for value in (2.5, 7.0, True, "7", None, torch.tensor(7.0), torch.tensor([7]), torch.tensor(True)):
        with pytest.raises(TypeError, match="n must be an int, got"):
            checks.as_int(value, "n")


@pytest.mark.parametrize(
    "dtype,offset", [(torch.bfloat16, 0), (torch.bfloat16, 16), (torch.int8, 8), (torch.float32, 4)]
)
def test_empty_at_places_the_data_past_a_64_byte_boundary(dtype, offset):
    t = empty_at((3, 5), dtype, offset)
    assert t.shape == (3, 5) and t.dtype == dtype and t.is_contiguous()
    assert t.data_ptr() % 64 == offset


def test_empty_at_refuses_offsets_that_split_an_element():
    with pytest.raises(ValueError, match="byte_offset"):
        empty_at((4,), torch.float32, 2)
    with pytest.raises(ValueError, match="byte_offset"):
        empty_at((4,), torch.float32, 64)
