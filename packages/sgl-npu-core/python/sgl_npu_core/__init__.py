"""Shared pieces of the sgl-npu kernel wheels: op loading/registration, testing and benchmark helpers.

The C++ headers and the CMake package live next to this file (``include/``, ``share/cmake/``) and
are found by the other wheels' builds through the ``cmake.prefix`` entry point.
"""

from pathlib import Path

__version__ = "0.1.0"

#: Where the C++ headers are installed (``#include "sgl_npu_core/checks.h"``).
INCLUDE_DIR = Path(__file__).parent / "include"

__all__ = ["INCLUDE_DIR", "__version__"]
