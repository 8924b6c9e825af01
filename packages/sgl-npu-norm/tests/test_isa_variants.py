"""The CPU kernels this machine does not pick by itself: test_norm.py, test_activation.py and test_rope.py again,
in a process whose ops take at most each capped variant (generic: what other architectures run; avx2: x86-64
without AVX512-BF16)."""

import os
from pathlib import Path

import pytest
from sgl_npu_core.testing import CAPPED_ISAS, run_tests_with_isa_cap


@pytest.mark.skipif(bool(os.environ.get("SGL_NPU_CPU_ISA")), reason="this process already runs with a capped ISA")
@pytest.mark.parametrize("isa", CAPPED_ISAS)
def test_kernel_tests_pass_with_a_capped_isa(isa):
    run_tests_with_isa_cap(Path(__file__).parent, ["test_norm.py", "test_activation.py", "test_rope.py"], isa)
