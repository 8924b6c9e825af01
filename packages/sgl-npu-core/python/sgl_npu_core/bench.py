"""Benchmark harness shared by the wheels: wall-clock timing, a copy-bandwidth yardstick, and reports
(markdown, json, png) of kernels against their PyTorch references run eagerly and under torch.compile."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

_device = torch.device("cpu")  # where the yardsticks live and which timer runs (see use_device)


def use_device(device: str | torch.device) -> None:
    """Benchmark on ``device``: its yardsticks are made there, and an accelerator is timed with device events.
    Cases are built under ``with torch.device(device)`` (run_suite does that) but timed outside it: a default
    device is a torch-function mode that every torch call in a kernel's Python wrapper would pay for."""
    global _device
    _device = torch.device(device)


def _on_accelerator() -> bool:
    return _device.type != "cpu"


def time_us(fn: Callable[[], object], **timing) -> float:
    """Median time of ``fn()`` in microseconds: wall time on the CPU, device time on an accelerator
    (see :func:`time_us_alternating`, of which this is the one-function case)."""
    return time_us_alternating([fn], **timing)[0]


def time_us_alternating(
    fns: Sequence[Callable[[], object]],
    *,
    warmup: int = 3,
    min_warmup: int = 0,
    min_iters: int = 5,
    min_time_s: float = 0.2,
    block_s: float = 0.05,
) -> list[float]:
    """Median time of each of ``fns`` in microseconds, timed in turn on the CPU: a block of calls of the first,
    then of the second, ..., round after round.

    Why in turn: this machine's speed drifts by up to 2x over seconds (other work on the host shares its memory
    bandwidth). A kernel and its yardstick (a copy of the same bytes, a GEMM) timed in turn see the same drift, so
    their ratio holds still where two measurements a minute apart do not. Why blocks: each function is timed
    with warm caches, as when it runs alone; a block starts with an untimed call that reloads what the other
    functions evicted (skipped for calls over 10 ms, which stream their data from memory anyway).

    Warm-up stops early once it has taken ``min_time_s`` (a compile, or a call slow enough not to need more
    warming), but not before ``min_warmup`` calls. Blocks last ``block_s`` (at least one call); rounds go on
    until every function has ``min_iters`` samples and ``min_time_s`` seconds per function have passed, so fast
    ops get many samples and a 300 ms op only ``min_iters``. The median ignores occasional stalls.

    On a GPU (``bench_*.py --device cuda``) each function is timed in turn by :func:`device_us`.
    """
    if _on_accelerator():
        return device_us(fns, min_time_s)
    for fn in fns:
        start = time.perf_counter()
        for i in range(max(warmup, min_warmup)):
            fn()
            if i + 1 >= min_warmup and time.perf_counter() - start >= min_time_s:
                break
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while min(map(len, samples)) < min_iters or time.perf_counter() - start < min_time_s * len(fns):
        for fn, own in zip(fns, samples, strict=True):
            if len(fns) > 1 and (not own or own[-1] < 0.01):
                fn()
            block = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                fn()
                t1 = time.perf_counter()
                own.append(t1 - t0)
                if t1 - block >= block_s or len(own) >= 100_000:
                    break
    return [statistics.median(own) * 1e6 for own in samples]


def device_us(fns: Sequence[Callable[[], object]], min_time_s: float = 0.2) -> list[float]:
    """Median device time of each of ``fns`` in microseconds, from CUDA-graph replays (Triton's
    ``do_bench_cudagraph``): the GPU's time alone, as a server that replays its decode step sees it, without the
    Python launch path that dominates small calls. When one of them cannot be captured (a call that reads a value
    back to the host), all of them are timed launched instead (``do_bench``: events around each call, the L2 cache
    flushed between calls), so the functions of one call are always timed alike."""
    from triton.testing import do_bench, do_bench_cudagraph

    rep = max(100, 1e3 * min_time_s)
    if all(map(_syncless, fns)):  # a capture that fails midway leaves torch's CUDA RNG unusable: test first
        return [do_bench_cudagraph(fn, rep=rep, return_mode="median") * 1e3 for fn in fns]
    return [do_bench(fn, warmup=max(25, rep / 4), rep=rep, return_mode="median") * 1e3 for fn in fns]


def _syncless(fn: Callable[[], object]) -> bool:
    """Whether ``fn()`` runs without waiting on the device (what a CUDA graph cannot capture), once warm (a
    first call may compile)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fn()
        return True
    except RuntimeError:
        return False
    finally:
        torch.cuda.set_sync_debug_mode("default")


def copy_call(nbytes: int, dtype: torch.dtype = torch.uint8) -> Callable[[], object]:
    """``dst.copy_(src)`` of ``nbytes`` on preallocated tensors, already touched, so page faults stay out of the
    timing. It reads and writes ``2 * nbytes``: what a memory-bound op moving as many bytes could hope for."""
    numel = max(1, nbytes // torch.empty((), dtype=dtype).element_size())
    src = torch.ones(numel, dtype=dtype, device=_device)
    dst = torch.zeros(numel, dtype=dtype, device=_device)
    return lambda: dst.copy_(src)


def gemm_call() -> tuple[Callable[[], object], int]:
    """torch's square GEMM and its FLOPs: the yardstick of compute-bound kernels. On the CPU fp32 at 2048 (the
    rate the C++ kernels' fp32 accumulation can reach); on an accelerator bf16 at 8192, the tensor-core rate that
    the Triton kernels' bf16 dots aim at (2048 is too small to fill a large GPU)."""
    n, dtype = (8192, torch.bfloat16) if _on_accelerator() else (2048, torch.float32)
    a, b = torch.randn(n, n, dtype=dtype, device=_device), torch.randn(n, n, dtype=dtype, device=_device)
    return (lambda: a @ b), 2 * n**3


# A copy this large runs from memory on every machine here (the CPUs' 32 MB L3, the GPUs' 50-60 MB L2): its GB/s,
# counting the read and the write, is the machine's copy bandwidth.
MEM_COPY_BYTES = 64 << 20
_mem_copies: dict[str, Callable[[], object]] = {}


def mem_copy_call() -> Callable[[], object]:
    """:func:`copy_call` of :data:`MEM_COPY_BYTES` on the current device, made once per device."""
    key = str(_device)
    if key not in _mem_copies:
        _mem_copies[key] = copy_call(MEM_COPY_BYTES)
    return _mem_copies[key]


def mem_copy_gbs(us: float) -> float:
    """GB/s of a :func:`mem_copy_call` that took ``us`` microseconds, counting the read and the write."""
    return 2 * MEM_COPY_BYTES / us / 1e3


def copy_bandwidth_gbs(nbytes: int, dtype: torch.dtype = torch.uint8, **timing) -> float:
    """GB/s of :func:`copy_call` of ``nbytes``, counting the read and the write."""
    return 2 * nbytes / time_us(copy_call(nbytes, dtype), **timing) / 1e3


def compiled(fn: Callable) -> Callable:
    """``torch.compile(fn, dynamic=False)``: one graph per shape, as a server compiles its fixed batch sizes.

    Dynamo's caches are reset first: benchmarking many shapes of one function would otherwise pass the
    recompile limit, after which dynamo silently runs the function eagerly.
    """
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(copy_nbytes: int = MEM_COPY_BYTES) -> dict:
    """What the numbers depend on: torch build, threads, CPU (or GPU and Triton), the copy bandwidth of a large
    buffer, and the load average (other work on a small machine stalls the threads: a high load flags a noisy
    run)."""
    accelerator = {}
    if _on_accelerator():
        import triton

        accelerator = {"device": torch.cuda.get_device_name(), "triton": triton.__version__}
    return {
        "torch": torch.__version__,
        **accelerator,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_name(),
        "copy_gbs": round(copy_bandwidth_gbs(copy_nbytes), 2),
        "copy_mb": round(copy_nbytes / 1e6),
        "load_1m": round(os.getloadavg()[0], 2),
    }


@dataclasses.dataclass
class Row:
    """One op at one shape and dtype. Times in microseconds; None where not measured.

    ``us`` is with preallocated outputs (``out=``), ``us_fresh`` with outputs allocated by the call.
    ``copy_gbs`` is the copy bandwidth for the same byte count, ``mem_copy_gbs`` that of a copy far larger than the
    caches (:data:`MEM_COPY_BYTES`: the machine's memory bandwidth, which a row that fits the caches can exceed) and
    ``gemm_gflops`` torch's GEMM rate (:func:`gemm_call`; rows with ``flops``, the compute-bound ones), each timed in
    turn with ``us``. The speed-ups compare like with like: the references allocate their outputs, so they divide
    by ``us_fresh`` when there is one; ``vs_compile_out`` is the kernel with ``out=`` against the compiled reference
    as a user calls it.
    """

    op: str
    shape: str
    dtype: str
    us: float
    us_fresh: float | None = None
    bytes: int | None = None
    copy_gbs: float | None = None
    eager_us: float | None = None
    compile_us: float | None = None
    flops: int | None = None
    gemm_gflops: float | None = None
    mem_copy_gbs: float | None = None
    gbs: float | None = dataclasses.field(init=False, default=None)
    pct_copy: float | None = dataclasses.field(init=False, default=None)
    pct_mem_copy: float | None = dataclasses.field(init=False, default=None)
    gflops: float | None = dataclasses.field(init=False, default=None)
    pct_gemm: float | None = dataclasses.field(init=False, default=None)
    vs_eager: float | None = dataclasses.field(init=False, default=None)
    vs_compile: float | None = dataclasses.field(init=False, default=None)
    vs_compile_out: float | None = dataclasses.field(init=False, default=None)

    def __post_init__(self):
        if self.bytes is not None:
            self.gbs = self.bytes / self.us / 1e3
            if self.copy_gbs:
                self.pct_copy = 100 * self.gbs / self.copy_gbs
            if self.mem_copy_gbs:
                self.pct_mem_copy = 100 * self.gbs / self.mem_copy_gbs
        if self.flops is not None:
            self.gflops = self.flops / self.us / 1e3
            if self.gemm_gflops:
                self.pct_gemm = 100 * self.gflops / self.gemm_gflops
        base = self.us if self.us_fresh is None else self.us_fresh
        self.vs_eager = None if self.eager_us is None else self.eager_us / base
        self.vs_compile = None if self.compile_us is None else self.compile_us / base
        # The kernel with preallocated outputs against the compiled reference as a user calls it.
        self.vs_compile_out = None if self.compile_us is None else self.compile_us / self.us

    @property
    def label(self) -> str:
        return f"{self.op} {self.shape} {self.dtype}"


# (header, Row attribute, format) of each markdown column.
_COLUMNS = [
    ("op", "op", "{}"),
    ("shape", "shape", "{}"),
    ("dtype", "dtype", "{}"),
    ("µs (out=)", "us", "{:.1f}"),
    ("µs (fresh)", "us_fresh", "{:.1f}"),
    ("MB", "bytes", "{:.3g}"),
    ("GB/s", "gbs", "{:.2f}"),
    ("% copy", "pct_copy", "{:.0f}%"),
    ("% mem copy", "pct_mem_copy", "{:.0f}%"),
    ("GFLOP/s", "gflops", "{:.1f}"),
    ("% GEMM", "pct_gemm", "{:.0f}%"),
    ("eager µs", "eager_us", "{:.1f}"),
    ("compile µs", "compile_us", "{:.1f}"),
    ("× eager", "vs_eager", "{:.2f}"),
    ("× compile", "vs_compile", "{:.2f}"),
    ("× compile (out=)", "vs_compile_out", "{:.2f}"),
]


def _bound(row: Row) -> float | None:
    """The share of the yardstick that bounds the row: the GEMM rate where it counts FLOPs, else the copy."""
    return row.pct_gemm if row.flops is not None else row.pct_copy


def _cell(row: Row, attr: str, fmt: str) -> str:
    value = getattr(row, attr)
    if value is None:
        return "–"
    return fmt.format(value / 1e6 if attr == "bytes" else value)


class Report:
    """Collects rows and writes ``<name>.md``, ``<name>.json`` and ``<name>.png`` into ``out_dir``."""

    def __init__(self, name: str, facts: dict | None = None, notes: list[str] | None = None):
        self.name = name
        self.facts = machine_facts() if facts is None else facts
        self.notes = notes or []
        self.rows: list[Row] = []

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def header(self) -> str:
        f = self.facts
        copy = f"copy {f['copy_gbs']} GB/s ({f['copy_mb']:g} MB)" if "copy_gbs" in f else "copy not measured"
        load = f", load {f['load_1m']} at start, {f.get('load_1m_end', '?')} at end" if "load_1m" in f else ""
        where = (
            f"{f['device']}, triton {f.get('triton')}"
            if "device" in f
            else f"{f.get('threads')} threads, {f.get('cpu', '?')}"
        )
        return f"torch {f.get('torch')}, {where}, {copy}{load}"

    def markdown(self) -> str:
        lines = [f"# {self.name}", "", self.header(), ""]
        if self.notes:
            lines += [*self.notes, ""]
        lines.append("| " + " | ".join(h for h, _, _ in _COLUMNS) + " |")
        lines.append("|" + "|".join("---" if i < 3 else "--:" for i in range(len(_COLUMNS))) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row, a, f) for _, a, f in _COLUMNS) + " |")
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        print(self.markdown(), flush=True)

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write the three files; returns their paths by suffix."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {ext: out / f"{self.name}.{ext}" for ext in ("md", "json", "png")}
        if "load_1m" in self.facts:
            self.facts["load_1m_end"] = round(os.getloadavg()[0], 2)
        paths["md"].write_text(self.markdown())
        doc = {
            "name": self.name,
            "facts": self.facts,
            "notes": self.notes,
            "rows": [dataclasses.asdict(r) for r in self.rows],
        }
        paths["json"].write_text(json.dumps(doc, indent=1) + "\n")
        self._plot(paths["png"])
        return paths

    def _plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

        labels = [r.label for r in self.rows][::-1]  # first row on top
        panels = [
            ("% of copy bandwidth (compute-bound rows: % of GEMM rate)", [_bound(r) for r in self.rows][::-1], 100.0),
            ("speed-up over torch.compile (×)", [r.vs_compile for r in self.rows][::-1], 1.0),
        ]
        fig, axes = plt.subplots(
            1, 2, figsize=(13, 1.5 + 0.2 * len(labels)), sharey=True, squeeze=False, layout="constrained"
        )
        for ax, (title, values, mark) in zip(axes[0], panels, strict=True):
            ax.barh(range(len(labels)), [0 if v is None else v for v in values], color="tab:blue")
            ax.axvline(mark, color="tab:red", lw=1)
            ax.set_title(title, fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].set_yticks(range(len(labels)), labels, fontsize=7)
        axes[0][0].set_ylim(-0.6, len(labels) - 0.4)
        fig.suptitle(f"{self.name}: {self.header()}", fontsize=9)
        fig.savefig(path, dpi=100)
        plt.close(fig)


# What the columns of a run_suite report mean.
# Untimed fresh-output calls before the fresh timing: a serving process's steady state, where outputs of 4 MB and
# more reuse the memory of dropped ones (sgl_npu_core.memory's pool) and the first calls' page faults are over.
FRESH_WARMUP_CALLS = 16

SUITE_NOTES = [
    "µs (out=): preallocated outputs; µs (fresh): outputs allocated by the call, each dropped before the next call, "
    f"timed after {FRESH_WARMUP_CALLS} untimed calls: outputs of 4 MB and more come from the ops' pool of dropped "
    "outputs' memory (`sgl_npu_core.memory`, already faulted in; smaller ones from torch's allocator); the "
    "references' outputs come from torch's allocator.",
    "MB: reads + writes of the data tensors, each counted once; % copy: GB/s over that of `dst.copy_(src)` "
    "moving the same bytes, timed in turn with the kernel (call for call, so both see the machine's drift); "
    "% mem copy: the same over a copy of 64 MB, far larger than the caches (the machine's memory bandwidth, as "
    "the header's copy), also timed in turn. Rows that fit the caches have their same-bytes copy run from the "
    "caches, several times faster than memory.",
    "eager / compile: the PyTorch reference called as a user calls it, eagerly and through "
    "`torch.compile(dynamic=False)`; × = reference time / kernel time (fresh outputs, as the reference "
    "allocates too).",
]

DEVICE_NOTE = (
    "On the GPU, µs is device time from CUDA-graph replays (`sgl_npu_core.bench.device_us`); calls that cannot be "
    "captured (references that read a value back to the host) are timed launched from Python, with events."
)


@dataclasses.dataclass
class Case:
    """One op at one shape: the kernel with and without preallocated outputs, the reference call, the bytes."""

    out: Callable[[], object]
    fresh: Callable[[], object] | None  # None: in place, nothing to allocate
    reference: Callable
    args: tuple
    nbytes: int
    flops: int | None = None  # compute-bound ops: also timed in turn with a GEMM (Row.pct_gemm)


def measure(
    name: str,
    case: Case,
    shape: str,
    dtype: torch.dtype,
    copy: Callable[[], object],
    refs: bool,
    timing: dict,
    mem_copy: bool = False,
) -> Row:
    """Times ``case`` (out=, fresh) and, with ``refs``, its reference eagerly and under torch.compile. ``copy``
    (a :func:`copy_call` of half the case's bytes), with ``mem_copy`` :func:`mem_copy_call` and, for a case with
    ``flops``, :func:`gemm_call` are timed in turn with ``case.out``: the yardsticks of % copy, % mem copy and
    % GEMM."""
    gemm, gemm_flops = gemm_call() if case.flops is not None else (None, None)
    extra = ([mem_copy_call()] if mem_copy else []) + ([gemm] if gemm else [])
    us, copy_us, *extra_us = time_us_alternating([case.out, copy, *extra], **timing)
    mem_copy_us = extra_us.pop(0) if mem_copy else None
    us_fresh = None if case.fresh is None else time_us(case.fresh, **{"min_warmup": FRESH_WARMUP_CALLS, **timing})
    eager_us = compile_us = None
    if refs:
        eager_us = time_us(lambda: case.reference(*case.args), **timing)
        fn = compiled(case.reference)
        compile_us = time_us(lambda: fn(*case.args), **timing)
    return Row(
        name, shape, str(dtype).removeprefix("torch."), us, us_fresh, case.nbytes,
        case.nbytes / copy_us / 1e3, eager_us, compile_us, case.flops,
        gemm_flops / extra_us[0] / 1e3 if gemm else None,
        None if mem_copy_us is None else mem_copy_gbs(mem_copy_us),
    )  # fmt: skip


def run_suite(
    name: str,
    ops: dict[str, Callable[..., Case]],
    shapes: Sequence[tuple] | dict[str, Sequence[tuple]],
    dtypes: Sequence[torch.dtype],
    *,
    notes: list[str],
    doc: str,
    quick_shape: tuple | dict[str, tuple],
    default_out: Path,
    argv: list[str] | None = None,
) -> Report:
    """The command line every ``bench_*.py`` shares: ``ops[op](*shape, dtype)`` builds a :class:`Case` for each
    op, dtype and shape (``shapes`` and ``quick_shape`` may be per op, as dicts); the report goes to
    ``<out>/<name>.md|json|png`` (``<name>-cuda`` with --device cuda)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=default_out, help="output dir (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="quick_shape in the first dtype, short timings (a smoke test)")
    p.add_argument("--ops", default=",".join(ops), help="comma-separated subset of: %(default)s")
    p.add_argument("--ref-max-mb", type=float, default=float("inf"),
                   help="skip the eager / compiled references where the op moves more MB than this")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="where tensors live: cpu (C++ kernels) or cuda (Triton kernels)")
    p.add_argument("--dtypes", default=",".join(str(d).removeprefix("torch.") for d in dtypes))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_device(args.device)

    names = [n.strip() for n in args.ops.split(",") if n.strip()]
    unknown = set(names) - set(ops)
    if unknown:
        p.error(f"unknown ops {sorted(unknown)}; choose from {list(ops)}")
    chosen = [getattr(torch, n.strip()) for n in args.dtypes.split(",") if n.strip()]

    def shapes_of(op):
        if args.quick:
            return [quick_shape[op] if isinstance(quick_shape, dict) else quick_shape]
        return shapes[op] if isinstance(shapes, dict) else shapes

    chosen = chosen[:1] if args.quick else chosen
    timing = {"min_time_s": 0.05} if args.quick else {}

    if args.device != "cpu":
        notes = [*notes, DEVICE_NOTE]
    report = Report(name if args.device == "cpu" else f"{name}-{args.device}", notes=notes)
    copies: dict[int, Callable[[], object]] = {}  # total bytes moved -> a copy that reads and writes as many
    for op in names:
        for dtype in chosen:
            for shape in shapes_of(op):
                with torch.device(args.device):  # every tensor the case makes
                    case = ops[op](*shape, dtype)
                if case.nbytes not in copies:
                    copies[case.nbytes] = copy_call(case.nbytes // 2)
                refs = case.nbytes / 1e6 <= args.ref_max_mb
                label = "x".join(str(s) for s in shape)
                row = report.add(measure(op, case, label, dtype, copies[case.nbytes], refs, timing, mem_copy=True))
                print(
                    f"{row.label}: {row.us:.1f} us, {row.pct_copy:.0f}% copy, {row.pct_mem_copy:.0f}% mem copy",
                    file=sys.stderr,
                    flush=True,
                )
    paths = report.write(args.out)
    report.print()
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return report
