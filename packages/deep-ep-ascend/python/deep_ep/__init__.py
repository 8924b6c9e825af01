"""deep_ep: DeepEP-compatible expert-parallel dispatch and combine (``torch.ops.deep_ep`` for the local kernels).

``Buffer`` follows DeepEP V1 semantics: normal-mode ``dispatch`` sends each token once to every rank holding one
of its top-k experts (rows grouped by source rank, then source token, ascending) and ``combine`` sums the
returned rows in fp32 in a fixed order. Tokens move through torch.distributed (``all_to_all_single``), so the
same code runs within one machine and across machines (gloo on CPUs).
"""

from sgl_npu_core.library import load_op_library

load_op_library(__file__)

from . import _meta  # noqa: E402  (the fake impls, once the ops exist)
from .buffer import Buffer
from .events import Config, EventOverlap  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Buffer", "Config", "EventOverlap"]
