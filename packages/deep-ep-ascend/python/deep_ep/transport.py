"""How rows reach other ranks: one shared-memory segment within a machine, torch.distributed across machines.

Each rank owns named byte *areas* (``dispatch``, ``combine``, ``low_latency``), and a *field* is a run of equal
rows inside an area. Every exchange follows the same three steps on every rank of the group:

1. ``gather(vec)``: each rank publishes a small int64 vector (its counts and status) and receives all of them as
   an ``[R, n]`` matrix. It is also a barrier: once it returns, every rank has entered this exchange, so the
   areas that the previous exchange filled are free to overwrite.
2. ``scatter(fields, src, sends)``, any number of times: rows of ``src`` land in other ranks' fields.
3. ``finish()``: once it returns, every row addressed to this rank has arrived.

``ShmTransport`` maps one POSIX shared-memory segment on every rank: ``scatter`` copies rows straight into the
peers' areas (C++ ``copy_rows``) and the barriers are epoch counters written with release/acquire atomics
(C++ ``shm_barrier``). ``CollectiveTransport`` keeps its areas private and moves rows with ``all_to_all_single``
(gloo on CPUs), so it also works across machines.
"""

from __future__ import annotations

import mmap
import os
import secrets
from typing import NamedTuple

import torch
import torch.distributed as dist
from sgl_npu_core.checks import fail

from . import _meta

_copy_rows = torch.ops.deep_ep.copy_rows.default
_shm_barrier = torch.ops.deep_ep.shm_barrier.default

ALIGN = 64  # fields start on cache lines
MAILBOX_WORDS = 4096  # int64 words each rank can publish per gather (counts per expert plus status)


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


class Field(NamedTuple):
    """``rows`` rows of ``row_bytes`` bytes at byte ``offset`` of an area."""

    area: str
    offset: int
    rows: int
    row_bytes: int

    @property
    def end(self) -> int:
        return self.offset + self.rows * self.row_bytes


def pack_fields(area: str, shapes: list[tuple[int, int]]) -> list[Field]:
    """Fields of ``(rows, row_bytes)`` one after another (cache-line aligned) from the start of ``area``."""
    fields, offset = [], 0
    for rows, row_bytes in shapes:
        fields.append(Field(area, offset, rows, row_bytes))
        offset = align(offset + rows * row_bytes)
    return fields


def row_bytes(t: torch.Tensor) -> int:
    """Bytes of one row (index of the first dim) of ``t``."""
    n = t.element_size()
    for d in t.shape[1:]:
        n *= d
    return n


class Send(NamedTuple):
    """Rows of ``src`` for one receiver: ``rows`` (an int64 index or a slice) land at ``dst_rows`` of the
    receiver's field, or one after another from row ``dst_start`` when ``dst_rows`` is None."""

    rows: torch.Tensor | slice
    dst_start: int = 0
    dst_rows: torch.Tensor | None = None


def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """``t`` as 2-D uint8 rows (one per leading index); the last dim must be contiguous."""
    if t.dim() != 2:
        t = t.reshape(t.shape[0], row_bytes(t) // t.element_size())
    return t.view(torch.uint8) if t.dtype != torch.uint8 else t


def _rows_of(src: torch.Tensor, send: Send) -> tuple[torch.Tensor, torch.Tensor | None]:
    return (src[send.rows], None) if isinstance(send.rows, slice) else (src, send.rows)


def _count(src: torch.Tensor, send: Send) -> int:
    return len(range(*send.rows.indices(src.shape[0]))) if isinstance(send.rows, slice) else send.rows.numel()


class _Transport:
    rank: int
    size: int
    # Whether a gather may carry vectors of different lengths from different ranks (each rank then reads the
    # others' first words correctly); torch.distributed's all_gather aborts the process on such a mismatch.
    gathers_unequal_lengths = False
    max_gather_words: int | None = None

    def field_view(self, field: Field, rank: int | None = None) -> torch.Tensor:
        """``field`` on ``rank`` (this one by default) as a uint8 ``[rows, row_bytes]`` tensor."""
        area = self._area(field.area, field.end, self.rank if rank is None else rank)
        return area[field.offset : field.end].view(field.rows, field.row_bytes)

    def capacity(self, area: str) -> int | None:
        """Bytes of ``area`` (None: it grows on demand)."""
        return None

    def locate(self, t: torch.Tensor, area: str) -> int:
        """Byte offset in the shared segment of contiguous ``t`` lying inside this rank's ``area``, else -1."""
        return -1


class ShmTransport(_Transport):
    """All ranks on one machine: one shared-memory segment, mapped by every rank, holds every rank's areas.

    Segment layout (int64 header, then the ranks' areas): ``flags [R, C]`` (``flags[p, s]`` is the last barrier
    epoch rank s announced to rank p; C rounds R up to a cache line), ``pids [R]``, ``mailbox [2, R, MAILBOX_WORDS]``
    (gathers alternate between the two: a rank that leaves a gather early, raising, may write its next one before
    a slower peer has read this one), then rank 0's areas, rank 1's areas, ... The segment's name is unlinked as
    soon as every rank has mapped it, so nothing is left in /dev/shm whether the processes exit cleanly or die.
    """

    gathers_unequal_lengths = True
    max_gather_words = MAILBOX_WORDS

    kind = "shared memory"

    def __init__(self, group, area_bytes: dict[str, int], timeout_s: float):
        self.group, self.rank, self.size = group, dist.get_rank(group), dist.get_world_size(group)
        self.timeout_s = float(timeout_s)
        self.area_bytes = {name: align(n) for name, n in area_bytes.items()}
        r, cols = self.size, (self.size + 7) // 8 * 8
        header_words = r * cols + cols + 2 * r * MAILBOX_WORDS
        self._area_offsets, offset = {}, align(8 * header_words)
        self._rank_bytes = 0
        for name, n in self.area_bytes.items():
            self._area_offsets[name] = self._rank_bytes
            self._rank_bytes += n
        self._areas_start = offset
        self._mm, self._segment = _map_group_segment(group, self.rank, offset + r * self._rank_bytes)
        header = self._segment[: 8 * header_words].view(torch.int64)
        self._flags = header[: r * cols].view(r, cols)
        self._pids = header[r * cols : r * cols + r]
        self._mailbox = header[r * cols + cols :].view(2, r, MAILBOX_WORDS)
        self._pids[self.rank] = os.getpid()
        self._area_views: dict[tuple[str, int], torch.Tensor] = {}
        self._epoch = 0
        self._barrier()  # every pid is written before anyone waits on a peer

    def capacity(self, area: str) -> int | None:
        return self.area_bytes[area]

    def _area(self, name: str, nbytes: int, rank: int) -> torch.Tensor:
        if nbytes > self.area_bytes[name]:
            raise RuntimeError(f"deep_ep: {nbytes} bytes do not fit the {self.area_bytes[name]}-byte {name} area")
        area = self._area_views.get((name, rank))
        if area is None:
            start = self._areas_start + rank * self._rank_bytes + self._area_offsets[name]
            area = self._area_views[(name, rank)] = self._segment[start : start + self.area_bytes[name]]
        return area

    def locate(self, t: torch.Tensor, area: str) -> int:
        begin = self._areas_start + self.rank * self._rank_bytes + self._area_offsets[area]
        offset = t.data_ptr() - self._segment.data_ptr()
        inside = begin <= offset and offset + t.numel() * t.element_size() <= begin + self.area_bytes[area]
        return offset if inside and t.is_contiguous() else -1

    def flat(self, dtype: torch.dtype) -> torch.Tensor:
        """The whole segment as one 1-D tensor of ``dtype``: every rank's areas, readable in place."""
        return self._segment.view(dtype)

    def segment_offset(self, field: Field, rank: int) -> int:
        """Byte offset of ``field`` on ``rank`` from the start of the segment."""
        return self._areas_start + rank * self._rank_bytes + self._area_offsets[field.area] + field.offset

    def _barrier(self) -> None:
        self._epoch += 1
        _shm_barrier(self._flags, self.rank, self._epoch, self.timeout_s, self._pids)

    def gather(self, vec: torch.Tensor) -> torch.Tensor:
        n = vec.numel()
        _meta.check(n <= MAILBOX_WORDS, f"a gather carries at most {MAILBOX_WORDS} words, got {n}")
        mailbox = self._mailbox[self._epoch % 2]  # the epoch this gather's barrier completes, less one
        mailbox[self.rank, :n] = vec
        self._barrier()
        return mailbox[:, :n].clone()

    def scatter(self, fields: list[Field], src: torch.Tensor, sends: list[Send | None]) -> None:
        src = _as_bytes(src)
        for p, send in enumerate(sends):
            if send is None or _count(src, send) == 0:
                continue
            rows, index = _rows_of(src, send)
            dst = self.field_view(fields[p], p)
            if send.dst_rows is None:
                dst = dst[send.dst_start : send.dst_start + _count(src, send)]
            _copy_rows(rows, index, dst, send.dst_rows)

    def finish(self) -> None:
        self._barrier()

    def close(self) -> None:
        self._flags = self._pids = self._mailbox = self._segment = None
        self._area_views = {}
        self._mm = None  # unmapped once no returned view refers to it any more


class CollectiveTransport(_Transport):
    """Ranks on several machines (or forced so): private areas that grow on demand; rows travel with
    ``all_to_all_single`` as bytes, so any dtype (fp8 included) crosses unchanged."""

    kind = "torch.distributed"

    def __init__(self, group):
        self.group, self.rank, self.size = group, dist.get_rank(group), dist.get_world_size(group)
        self._areas: dict[str, torch.Tensor] = {}

    def _area(self, name: str, nbytes: int, rank: int) -> torch.Tensor:
        _meta.check(rank == self.rank, "over torch.distributed a rank sees only its own areas")
        area = self._areas.get(name)
        if area is None or area.numel() < nbytes:  # grow, keeping the fields this exchange already filled
            grown = torch.empty(max(nbytes, 0 if area is None else area.numel() * 3 // 2), dtype=torch.uint8)
            if area is not None:
                grown[: area.numel()] = area
            area = self._areas[name] = grown
        return area

    def gather(self, vec: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(vec) for _ in range(self.size)]
        dist.all_gather(out, vec.contiguous(), group=self.group)
        return torch.stack(out)

    def exchange(self, rows: torch.Tensor, send_counts: list[int], recv_counts: list[int]) -> torch.Tensor:
        """``all_to_all_single`` of ``rows`` (send_counts[j] of them to rank j, in order), as raw bytes."""
        out = rows.new_empty((sum(recv_counts), *rows.shape[1:]))
        dist.all_to_all_single(_as_bytes(out), _as_bytes(rows), recv_counts, send_counts, group=self.group)
        return out

    def scatter(self, fields: list[Field], src: torch.Tensor, sends: list[Send | None]) -> None:
        src = _as_bytes(src)
        parts, places = [], []
        for send in sends:
            if send is None:
                send = Send(slice(0, 0))
            rows, index = _rows_of(src, send)
            parts.append(rows if index is None else rows[index])
            n = parts[-1].shape[0]
            at = send.dst_rows if send.dst_rows is not None else torch.arange(send.dst_start, send.dst_start + n)
            places.append(at)
        send_counts = [p.shape[0] for p in parts]
        recv_counts = self.gather(torch.tensor(send_counts))[:, self.rank].tolist()
        received = self.exchange(torch.cat(parts), send_counts, recv_counts)
        where = self.exchange(torch.cat(places).to(torch.int64).unsqueeze(1), send_counts, recv_counts)
        _copy_rows(received, None, self.field_view(fields[self.rank]), where.squeeze(1))

    def finish(self) -> None:
        pass  # all_to_all_single has already delivered every row

    def close(self) -> None:
        self._areas.clear()


def _map_group_segment(group, rank: int, nbytes: int):
    """Rank 0 creates a shared-memory file of ``nbytes`` (its memory reserved up front, so running out fails
    here and not as a SIGBUS later); every rank maps it; then its name is unlinked."""
    name, error = None, None
    if rank == 0:
        name = f"deep_ep.{os.getpid()}.{secrets.token_hex(6)}"
        try:
            fd = os.open(f"/dev/shm/{name}", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            try:
                os.posix_fallocate(fd, 0, nbytes)
            finally:
                os.close(fd)
        except OSError as e:
            _unlink(name)
            name, error = None, f"cannot create a {nbytes}-byte shared-memory segment: {e}"
    box = [(name, error)]
    dist.broadcast_object_list(box, group=group, group_src=0)
    name, error = box[0]
    if error is not None:
        raise RuntimeError(f"deep_ep.Buffer: {error}")
    mm, error = None, None
    try:
        fd = os.open(f"/dev/shm/{name}", os.O_RDWR)
        try:
            mm = mmap.mmap(fd, nbytes)
        finally:
            os.close(fd)
    except OSError as e:
        error = f"rank {rank} cannot map the shared-memory segment: {e}"
    errors = [None] * dist.get_world_size(group)
    dist.all_gather_object(errors, error, group=group)  # every rank has mapped it (or failed) by now
    if rank == 0:
        _unlink(name)
    failed = [e for e in errors if e is not None]
    if failed:
        raise RuntimeError(f"deep_ep.Buffer: {failed[0]}")
    return mm, torch.frombuffer(mm, dtype=torch.uint8)


def _unlink(name: str) -> None:
    try:
        os.unlink(f"/dev/shm/{name}")
    except FileNotFoundError:
        pass


def node_count(group, ranks_per_node: int | None) -> int:
    """How many machines the group spans: by host name, or ranks ``r // ranks_per_node`` share one when set
    (``DEEP_EP_RANKS_PER_NODE``, which lets one machine test the multi-machine path)."""
    size = dist.get_world_size(group)
    if ranks_per_node is not None:
        if not (ranks_per_node > 0 and size % ranks_per_node == 0):
            fail(f"DEEP_EP_RANKS_PER_NODE = {ranks_per_node}: {size} ranks do not fill nodes of that size")
        return size // ranks_per_node
    hosts = [None] * size
    dist.all_gather_object(hosts, os.uname().nodename, group=group)
    return len(set(hosts))
