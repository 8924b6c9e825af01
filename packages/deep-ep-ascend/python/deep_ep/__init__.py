"""deep_ep: DeepEP-compatible expert-parallel dispatch and combine (``torch.ops.deep_ep`` for the local kernels).

``Buffer`` follows DeepEP V1 semantics: normal-mode ``dispatch`` sends each token once to every rank holding one
of its top-k experts (rows grouped by source rank, then source token, ascending) and ``combine`` sums the
returned rows in fp32 in a fixed order; ``layout="expanded"`` gives Ascend's row per (token, local expert).
Low-latency mode sends one message per (token, expert) into fixed slots; ``fused_deep_moe`` runs dispatch, an
int8 SwiGLU expert FFN and combine in one call. Rows move through shared memory within one machine and through
torch.distributed across machines (see ``deep_ep.transport``).
"""

from sgl_npu_core.library import load_op_library

load_op_library(__file__)

from . import _meta  # noqa: E402  (the fake impls, once the ops exist)
from .buffer import Buffer  # noqa: E402
from .events import Config, EventOverlap  # noqa: E402
from .moe import FuseMode  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Buffer", "Config", "EventOverlap", "FuseMode"]
