"""The CPU kernels this machine does not pick by itself: test_norm.py, test_activation.py and test_rope.py again, in
a process where SGL_NPU_CPU_ISA caps the variant the ops take (generic: what other architectures run; avx2: what
x86-64 CPUs without AVX512-BF16 run). Where the cap is what runs anyway, this repeats the main run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("isa", ["generic", "avx2"])
def test_kernel_tests_pass_with_a_capped_isa(isa):
    if os.environ.get("SGL_NPU_CPU_ISA"):
        pytest.skip("this process already runs with a capped ISA")
    env = {**os.environ, "SGL_NPU_CPU_ISA": isa}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    cmd += ["test_norm.py", "test_activation.py", "test_rope.py"]
    done = subprocess.run(cmd, cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
