"""The CPU kernels this machine does not pick by itself: the decode, extend, MLA and prolog tests again,
in a process whose ops take at most each capped variant (generic: what other architectures run; avx2: x86-64
without AVX512-BF16)."""

import os
from pathlib import Path

import pytest
from sgl_npu_core.testing import CAPPED_ISAS, run_tests_with_isa_cap


@pytest.mark.skipif(bool(os.environ.get("SGL_NPU_CPU_ISA")), reason="this process already runs with a capped ISA")
@pytest.mark.parametrize("isa", CAPPED_ISAS)
def test_kernel_tests_pass_with_a_capped_isa(isa):
    files = ["test_decode.py", "test_extend.py", "test_mla.py", "test_prolog.py"]
    run_tests_with_isa_cap(Path(__file__).parent, files, isa)
