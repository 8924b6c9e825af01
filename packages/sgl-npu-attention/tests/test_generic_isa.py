"""The portable (non-AVX2) CPU kernels of mla_preprocess: test_prolog.py again, in a process where
SGL_NPU_CPU_ISA=generic makes the ops take them. On a CPU without AVX2 they are what runs anyway."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(os.environ.get("SGL_NPU_CPU_ISA") == "generic", reason="this process already runs generic")
def test_prolog_tests_pass_with_the_generic_isa():
    env = {**os.environ, "SGL_NPU_CPU_ISA": "generic"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "test_prolog.py"]
    done = subprocess.run(cmd, cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and " failed" not in done.stdout
