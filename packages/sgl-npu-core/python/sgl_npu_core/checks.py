"""Python argument checks, mirroring the C++ ones (sgl_npu_core/checks.h) for the faces that run in
Python: fake impls (torch.compile tracing) and accelerator (Triton / reference) impls."""

from __future__ import annotations

import operator
from typing import NoReturn

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def fail(message: str) -> NoReturn:
    raise RuntimeError(message)


def check(cond: bool, message: str) -> None:
    if not cond:
        fail(message)


def check_tensor(t, name: str) -> None:
    """A TypeError naming the argument where ``t`` is no tensor (its attributes would raise one naming nothing)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def as_int(value, name: str) -> int:
    """``value`` as a Python int: an integer (numpy's and 0-dim integer tensors included), never a bool, a float,
    a string or a tensor with dims, which ``int()`` would silently truncate, parse or unwrap."""
    tensor = isinstance(value, torch.Tensor)
    if not isinstance(value, bool) and not (tensor and (value.dim() or value.dtype == torch.bool)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name} must be an int, got {value!r}")


def check_dims(t: torch.Tensor, dims: int, name: str, layout: str) -> torch.Size:
    """``t.shape``, once ``t`` is known to be a tensor of ``dims`` dims (``layout`` names them in the message)."""
    check_tensor(t, name)
    if t.dim() != dims:
        fail(f"{name} must be {layout}, got {t.dim()} dims")
    return t.shape


def last_dim(t: torch.Tensor, name: str) -> int:
    """``t.shape[-1]``, once ``t`` is known to be a tensor with a dim (where indexing it would raise an error that
    does not name the argument)."""
    check_tensor(t, name)
    if t.dim() == 0:
        fail(f"{name} must have at least 1 dim")
    return t.shape[-1]


# The helpers below format their messages only on failure (``if not cond: fail(f"...")``): at decode sizes a
# wrapper's eager f-strings took several µs of a ~10 µs call.


def check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in FLOAT_DTYPES:
        fail(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def check_dtype(t: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    if t.dtype != dtype:
        fail(f"{name} must be {dtype}, got {t.dtype}")


def check_same_dtype(t: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    """The C++ check_same_dtype's message: dtypes named without ``torch.``."""
    if t.dtype != ref.dtype:
        want, got = str(ref.dtype).removeprefix("torch."), str(t.dtype).removeprefix("torch.")
        fail(f"{name} must have the dtype of {ref_name} ({want}), got {got}")


def check_same_device(t: torch.Tensor, ref: torch.Tensor, name: str, ref_name: str) -> None:
    if t.device != ref.device:
        fail(f"{name} must be on {ref_name}'s device ({ref.device}), got {t.device}")


def check_last_dim_contiguous(t: torch.Tensor, name: str) -> None:
    if not (t.dim() == 0 or t.stride(-1) == 1 or t.shape[-1] == 1):
        fail(f"{name} must be contiguous in its last dim")


def check_contiguous(t: torch.Tensor, name: str) -> None:
    """As the C++ check_contiguous: the device kernels index such tensors as dense."""
    if not t.is_contiguous():
        fail(f"{name} must be contiguous")


def check_rows(t: torch.Tensor, name: str) -> tuple[int, int]:
    """(rows, cols) of ``t`` read as rows over its last dim, which must be non-empty and contiguous."""
    if t.dim() < 1:
        fail(f"{name} must have at least 1 dim")
    cols = t.shape[-1]
    if cols <= 0:
        fail(f"{name} must have a non-empty last dim")
    check_last_dim_contiguous(t, name)
    row_stride(t, name)
    return t.numel() // cols, cols


def check_channel_param(t: torch.Tensor | None, size: int, ref: torch.Tensor, name: str) -> None:
    if t is None:
        return
    if not (t.dim() == 1 and t.shape[0] == size):
        fail(f"{name} must have shape [{size}], got {list(t.shape)}")
    check_contiguous(t, name)
    check_float(t, name)
    check_same_device(t, ref, name, "x")


def row_stride(t: torch.Tensor, name: str) -> int:
    """Elements between consecutive rows of ``t`` read as rows over its last dim (as the C++ ``as_rows``):
    the leading dims must collapse into one evenly strided dim; size-1 dims have no meaningful stride."""
    cols = t.shape[-1]
    stride, expect = cols, None
    if t.numel() == 0:  # no row to place (an empty dim's neighbours may have any stride)
        return stride
    for d in range(t.dim() - 2, -1, -1):
        if t.shape[d] == 1:
            continue
        if expect is None:
            stride = t.stride(d)
            if stride < cols:
                fail(f"{name} has overlapping rows (stride {stride})")
        else:
            if t.stride(d) != expect:
                fail(f"{name} has leading dims that do not collapse into rows")
        expect = t.stride(d) * t.shape[d]
    return stride


def num_rows(t: torch.Tensor) -> int:
    return t.numel() // t.shape[-1]


def _byte_span(t: torch.Tensor) -> tuple[int, int]:
    if t.numel() == 0:
        return 0, 0
    start = t.data_ptr()
    return start, start + (sum((n - 1) * st for n, st in zip(t.shape, t.stride(), strict=True)) + 1) * t.element_size()


def has_memory(*tensors: torch.Tensor) -> bool:
    """Whether the tensors' memory can be compared: plain tensors on one real device, outside tracing (fake and
    meta tensors have none)."""
    if torch.compiler.is_compiling() or any(type(t) is not torch.Tensor for t in tensors):
        return False
    device = tensors[0].device
    return device.type != "meta" and all(t.device == device for t in tensors)


def check_apart(out: torch.Tensor, other: torch.Tensor, out_name: str, other_name: str) -> None:
    """``out`` must not share memory with ``other`` (see _share_memory), as the C++ check_apart. Skipped where there
    is no memory to compare (see has_memory)."""
    if has_memory(out, other):
        _fail_if_shared(out, other, out_name, other_name)


def _byte_rows(t: torch.Tensor) -> tuple[int, int, int, int] | None:
    """``t``'s elements as (first byte, runs, bytes between runs, bytes per run) of contiguous bytes, or None where
    they do not form evenly spaced runs, as the C++ byte_rows."""
    if t.dim() == 0 or t.numel() == 0:
        return None
    outer, width = t.dim() - 1, 1
    while outer >= 0 and (t.shape[outer] == 1 or t.stride(outer) == width):
        width *= t.shape[outer]
        outer -= 1
    rows, stride, expect = 1, width, None
    for d in range(outer, -1, -1):
        if t.shape[d] == 1:
            continue
        if expect is not None and t.stride(d) != expect:
            return None
        if expect is None:
            stride = t.stride(d)
        rows *= t.shape[d]
        expect = t.stride(d) * t.shape[d]
    if stride < width:
        return None
    return t.data_ptr(), rows, stride * t.element_size(), width * t.element_size()


def _share_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors share a byte, as the C++ share_memory: run by run where their runs have one stride, else
    (conservatively) by their spans."""
    sa, sb = a.untyped_storage(), b.untyped_storage()
    if sa.data_ptr() + sa.nbytes() <= sb.data_ptr() or sb.data_ptr() + sb.nbytes() <= sa.data_ptr():
        return False  # separate allocations (the usual case, ~10x cheaper than the test below)
    ra, rb = _byte_rows(a), _byte_rows(b)  # runs at least their width apart, or None
    if ra and rb:
        (a_first, a_rows, a_stride, a_width), (b_first, b_rows, b_stride, b_width) = ra, rb
        if (a_rows > 1 or b_rows > 1) and (a_rows == 1 or b_rows == 1 or a_stride == b_stride):
            stride = a_stride if a_rows > 1 else b_stride
            d = b_first - a_first
            k = max((-b_width - d) // stride + 1, 1 - a_rows)  # the least j - i with row j of b past row i of a's start
            return k <= b_rows - 1 and d + k * stride < a_width
    (a0, a1), (b0, b1) = _byte_span(a), _byte_span(b)
    return a0 != a1 and b0 != b1 and a0 < b1 and b0 < a1


def _fail_if_shared(out: torch.Tensor, other: torch.Tensor, out_name: str, other_name: str) -> None:
    if _share_memory(out, other):
        fail(f"{out_name} must not overlap {other_name}")


def check_written_apart(written: list, read: list) -> None:
    """As the C++ check_written_apart: each written ``(name, tensor)`` apart from every read one and from the other
    written ones (None: an absent optional tensor)."""
    for i, (name, t) in enumerate(written):
        if t is None:
            continue
        for other_name, other in [*written[i + 1 :], *read]:
            if other is not None:
                check_apart(t, other, name, other_name)


def check_disjoint(t: torch.Tensor, name: str) -> None:
    """An output whose elements are all distinct memory (last dim contiguous), as the C++ check_disjoint: with the
    leading dims ordered by stride, each must clear everything inside it. An expand()ed output would be written by
    several programs at once."""
    inner = t.shape[-1]
    for size, stride in sorted(zip(t.shape[:-1], t.stride()[:-1], strict=True), key=lambda d: d[1]):
        if size > 1:
            if stride < inner:
                fail(f"{name} must not overlap itself (strides {list(t.stride()[:-1])})")
            inner = (size - 1) * stride + inner


def check_same_or_apart(out: torch.Tensor, other: torch.Tensor, out_name: str, other_name: str) -> None:
    """``out`` is exactly ``other`` (in place) or apart from it, as the C++ check_same_or_apart."""
    if not has_memory(out, other):
        return
    same = out.data_ptr() == other.data_ptr() and out.shape == other.shape
    same = same and all(n == 1 or a == b for n, a, b in zip(out.shape, out.stride(), other.stride(), strict=True))
    if not same:  # (a dim of one element has no stride to agree on)
        _fail_if_shared(out, other, out_name, other_name)  # has_memory already held
