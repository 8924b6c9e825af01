"""Test helpers shared by the wheels: tolerances per dtype and closeness asserts that explain failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

#: Default (atol, rtol) for outputs computed in fp32 and rounded once to the dtype.
TOLERANCES = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 5e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def empty_at(shape: tuple[int, ...], dtype: torch.dtype, byte_offset: int = 0) -> torch.Tensor:
    """An uninitialized contiguous tensor whose data starts ``byte_offset`` bytes past a 64-byte boundary: the
    kernels store whole 64-byte lines, 16 bytes at a time or plain stores depending on an output's alignment."""
    elem = torch.empty((), dtype=dtype).element_size()
    if byte_offset % elem or not 0 <= byte_offset < 64:
        raise ValueError(f"byte_offset must be a multiple of {elem} in [0, 64), got {byte_offset}")
    n = 1
    for size in shape:
        n *= size
    base = torch.empty(n + 64 // elem, dtype=dtype)
    skip = (byte_offset - base.data_ptr()) % 64 // elem
    return base[skip : skip + n].view(shape)


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(atol, rtol) for a result of ``dtype`` compared with an fp32 reference rounded to ``dtype``."""
    return TOLERANCES[dtype]


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``||actual - expected|| / ||expected||`` in fp64 (0 when both are zero)."""
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    denom = e.norm().item()
    diff = (a - e).norm().item()
    return diff / denom if denom > 0 else diff


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    max_rel_error: float | None = None,
    name: str = "output",
) -> None:
    """Elementwise ``|a - e| <= atol + rtol |e|`` (defaults from the dtype of ``expected``), shapes and dtypes
    equal, and optionally a bound on the relative error of the whole tensor."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    if expected.dtype.is_floating_point:
        d_atol, d_rtol = TOLERANCES.get(expected.dtype, (1e-5, 1e-5))
        atol = d_atol if atol is None else atol
        rtol = d_rtol if rtol is None else rtol
    else:
        atol = 0 if atol is None else atol
        rtol = 0 if rtol is None else rtol
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    bad = ~((a - e).abs() <= atol + rtol * e.abs()) & ~(a.isnan() & e.isnan())
    if bad.any():
        idx = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{name}: {int(bad.sum())} of {a.numel()} elements differ beyond atol={atol}, rtol={rtol}; "
            f"first at {idx}: {a[tuple(idx)].item()} vs {e[tuple(idx)].item()}; "
            f"max abs diff {(a - e).abs().nan_to_num(0).max().item():.3g}"
        )
    if max_rel_error is not None:
        err = rel_error(actual, expected)
        assert err <= max_rel_error, f"{name}: relative error {err:.3g} > {max_rel_error}"


def assert_codes_close(actual: torch.Tensor, expected: torch.Tensor, *, max_mismatch: float = 0.01, name="codes"):
    """Quantized codes (int8): a one-ulp fp32 difference (exp, rsqrt, fma, summation order) may move a value
    across a rounding boundary, so allow off-by-one on at most ``max_mismatch`` of the codes, never more."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, f"{name}: dtype or shape differ"
    diff = (actual.int() - expected.int()).abs()
    assert diff.numel() == 0 or diff.max() <= 1, f"{name}: max diff {diff.max()}"
    wrong = int((diff != 0).sum())
    assert wrong <= max(1, int(diff.numel() * max_mismatch)), f"{name}: {wrong} of {diff.numel()} codes differ"


# The kernel variants below the best one an x86-64 CPU may run (sgl_npu_core/isa.h): what other machines take.
CAPPED_ISAS = ["generic", "avx2"]


def run_tests_with_isa_cap(test_dir: Path, files: list[str], isa: str) -> None:
    """Runs pytest on ``files`` of ``test_dir`` in a process whose ops take at most the ``isa`` kernel variant
    (``SGL_NPU_CPU_ISA``) and fails with the end of its output unless they all pass. Where the cap is what runs
    anyway, this repeats the main run."""
    env = {**os.environ, "SGL_NPU_CPU_ISA": isa}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *files]
    done = subprocess.run(cmd, cwd=test_dir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
