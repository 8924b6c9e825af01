# Seeding, the Triton interpreter and the `on_test_device` fixture (SGL_NPU_TEST_DEVICE) for every test here.
pytest_plugins = ["sgl_npu_core.pytest_plugin"]
