"""DeepEP's tuning record and event wrapper, kept for API compatibility: work here completes synchronously."""

from __future__ import annotations


class Config:
    """DeepEP's tuning record (SMs and queue chunk sizes), kept for API compatibility: nothing here needs it."""

    def __init__(self, num_sms: int = 20, num_max_nvl_chunked_send_tokens: int = 6,
                 num_max_nvl_chunked_recv_tokens: int = 256, num_max_rdma_chunked_send_tokens: int = 6,
                 num_max_rdma_chunked_recv_tokens: int = 256):  # fmt: skip
        self.num_sms = num_sms
        self.num_max_nvl_chunked_send_tokens = num_max_nvl_chunked_send_tokens
        self.num_max_nvl_chunked_recv_tokens = num_max_nvl_chunked_recv_tokens
        self.num_max_rdma_chunked_send_tokens = num_max_rdma_chunked_send_tokens
        self.num_max_rdma_chunked_recv_tokens = num_max_rdma_chunked_recv_tokens


class EventOverlap:
    """DeepEP's event wrapper. Work here finishes before the call returns, so waiting is a no-op; the extra
    tensors are kept alive as DeepEP does."""

    def __init__(self, event=None, extra_tensors=None):
        self.event = event
        self.extra_tensors = extra_tensors

    def current_stream_wait(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.current_stream_wait()
