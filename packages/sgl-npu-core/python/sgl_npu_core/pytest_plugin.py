"""pytest fixtures shared by the wheels' test suites; a suite's conftest.py loads them with
``pytest_plugins = ["sgl_npu_core.pytest_plugin"]``."""

import os

# Triton kernels run on CPU tensors through the interpreter; it must be chosen before triton is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# SGL_NPU_TEST_DEVICE=cuda (with TRITON_INTERPRET=0) runs the tests that use `on_test_device` on a GPU: the
# Triton kernels natively (see ci/gpu_check.sh). Default: the CPU.
TEST_DEVICE = os.environ.get("SGL_NPU_TEST_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def on_test_device():
    """Every tensor the test makes lives on TEST_DEVICE."""
    with torch.device(TEST_DEVICE):
        yield
