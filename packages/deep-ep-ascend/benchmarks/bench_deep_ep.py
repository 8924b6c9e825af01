"""deep_ep dispatch / combine against the same exchange done with torch.distributed.all_to_all_single on gloo,
measured in the same run, each rank on one thread (``--threads``).

Normal mode: N tokens per rank, top-k of E experts, int8 dispatch of pre-quantized ``(data, scales)`` rows (as
DeepEP's normal mode takes them) and bf16 combine. Low-latency mode: T tokens per rank, int8 quantized inside
dispatch, bf16 weighted combine. Bytes follow DeepEP's formulas (one row per (token, rank) in normal mode, per
(token, expert) in low-latency mode); "copy" is ``dst.copy_(src)`` of a normal-mode-sized buffer on every rank at
once (bytes counted once). Times are the median over iterations, each started after a barrier, averaged over ranks;
the calls being compared (ours, gloo's, the copy) are timed in turn, block by block, so they see the same machine.

    python bench_deep_ep.py --out docs/benchmarks            # EP = 2 and 4
    python bench_deep_ep.py --ranks 2 --tokens 512 --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist


def _medians_in_turn(fns: dict, iters: int, warmup: int = 3, block: int = 4) -> dict[str, float]:
    """Median µs of each call, timed in turn: a block of ``block`` calls of each function, round after round, until
    each has ``iters``. The machine's speed drifts over seconds; timed in turn, ours and gloo's see the same drift.
    Each block starts with an untimed call (caches warm again after the other calls), each timed call after a
    barrier (every rank starts together). Not ``sgl_npu_core.bench.time_us_alternating``: that one decides block
    lengths by the clock, and ranks whose clocks disagree would stop calling the collectives at different times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    while min(map(len, samples.values())) < iters:
        for name, fn in fns.items():
            fn()
            for _ in range(block):
                dist.barrier()
                start = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(own) * 1e6 for name, own in samples.items()}


def _gloo_exchange(send: torch.Tensor, send_counts: list[int], recv_counts: list[int]):
    """The baseline: one all_to_all_single of the rows as bytes, into a preallocated receive buffer."""
    send = send.contiguous().view(torch.uint8).view(send.shape[0], -1)
    recv = send.new_empty(sum(recv_counts), send.shape[1])
    return lambda: dist.all_to_all_single(recv, send, recv_counts, send_counts)


def _normal_mode(buffer, args, rank: int, world: int) -> dict:
    from deep_ep.quant import quantize

    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.tokens, args.hidden, generator=g).to(torch.bfloat16)
    topk_idx = torch.rand(args.tokens, args.experts, generator=g).topk(args.topk, dim=-1).indices
    weights = torch.rand(args.tokens, args.topk, generator=g)
    x_q = quantize(x, "int8")
    per_rank, _, per_expert, in_rank, _ = buffer.get_dispatch_layout(topk_idx, args.experts)
    layout = dict(num_tokens_per_rank=per_rank, is_token_in_rank=in_rank, num_tokens_per_expert=per_expert,
                  topk_idx=topk_idx, topk_weights=weights)  # fmt: skip
    (recv_q, recv_s), _, _, _, handle, _ = buffer.dispatch(x_q, **layout)
    recv_x = recv_q.float().to(torch.bfloat16)  # the experts' bf16 outputs, one per received row
    out = torch.empty_like(x)
    staged = buffer.get_next_combine_buffer(handle, args.hidden)  # where experts can write their outputs
    staged.copy_(recv_x)
    n_recv = recv_q.shape[0]
    send_rows = x_q[0][handle.send_token]
    send_scales = x_q[1][handle.send_token]
    dispatch_send = torch.cat([send_rows.view(torch.uint8), send_scales.view(torch.uint8).view(-1, 4)], 1)
    src, dst = torch.ones_like(x), torch.zeros_like(x)  # the copy yardstick: N x H bf16 on every rank at once
    fns = {
        "dispatch": lambda: buffer.dispatch(x_q, **layout),
        "dispatch (cached)": lambda: buffer.dispatch(x_q, handle=handle),
        "dispatch gloo": _gloo_exchange(dispatch_send, handle.send_counts, handle.recv_counts),
        "combine": lambda: buffer.combine(recv_x, handle, out=out),
        "combine (fresh out)": lambda: buffer.combine(recv_x, handle),
        "combine (in place)": lambda: buffer.combine(staged, handle, out=out),
        "combine gloo": _gloo_exchange(recv_x, handle.recv_counts, handle.send_counts),
        "copy": lambda: dst.copy_(src),
    }
    return {
        **_medians_in_turn(fns, args.iters),
        "copy bytes": x.nbytes,
        "dispatch bytes": n_recv * (args.hidden + 4),
        "combine bytes": n_recv * args.hidden * 2,
    }


def _low_latency(buffer, args, rank: int) -> dict:
    g = torch.Generator().manual_seed(100 + rank)
    t = args.ll_tokens
    x = torch.randn(t, args.hidden, generator=g).to(torch.bfloat16)
    topk_idx = torch.rand(t, args.experts, generator=g).topk(args.topk, dim=-1).indices
    weights = torch.rand(t, args.topk, generator=g)

    local = args.experts // dist.get_world_size()
    expert_out = torch.zeros(local, dist.get_world_size() * t, args.hidden, dtype=torch.bfloat16)

    def there_and_back():
        _, _, handle, _, _ = buffer.low_latency_dispatch(x, topk_idx, t, args.experts, quant_mode="int8")
        buffer.low_latency_combine(expert_out, topk_idx, weights, handle)

    # Baseline: the same (token, expert) messages there (int8 + a scale) and back (bf16), by all_to_all_single.
    per_rank = args.experts // dist.get_world_size()
    valid = topk_idx.flatten()
    order = torch.argsort(valid // per_rank, stable=True)
    counts = torch.bincount(valid // per_rank, minlength=dist.get_world_size())
    matrix = [torch.empty_like(counts) for _ in range(dist.get_world_size())]
    dist.all_gather(matrix, counts)
    recv_counts = [int(m[rank]) for m in matrix]
    tokens = order // args.topk
    there = torch.cat([torch.randint(-127, 127, (len(tokens), args.hidden), dtype=torch.int8).view(torch.uint8),
                       torch.zeros(len(tokens), 4, dtype=torch.uint8)], 1)  # fmt: skip
    back = torch.zeros(sum(recv_counts), args.hidden, dtype=torch.bfloat16)
    go, come = _gloo_exchange(there, counts.tolist(), recv_counts), _gloo_exchange(back, recv_counts, counts.tolist())

    def gloo_there_and_back():
        go()
        come()

    def there_and_back_in_place():
        _, _, handle, _, _ = buffer.low_latency_dispatch(x, topk_idx, t, args.experts, quant_mode="int8")
        out = buffer.get_next_low_latency_combine_buffer(handle)  # the experts write here
        buffer.low_latency_combine(out, topk_idx, weights, handle, zero_copy=True)

    selections = len(valid)
    fns = {
        "low-latency dispatch + combine": there_and_back,
        "low-latency dispatch + combine (zero copy)": there_and_back_in_place,
        "low-latency gloo there and back": gloo_there_and_back,
    }
    return {
        **_medians_in_turn(fns, args.iters),
        "low-latency bytes": selections * (args.hidden + args.hidden // 32 + 16) + selections * 2 * args.hidden,
    }


def _rank_main(args) -> None:
    import deep_ep

    torch.set_num_threads(args.threads)
    rank, world = args.rank, args.world
    dist.init_process_group("gloo", init_method=f"file://{args.init}", rank=rank, world_size=world)
    rows = world * args.tokens
    nvl = 2 * rows * (3 * args.hidden + 64 + 12 * args.topk)  # received int8 rows + a bf16 combine buffer, per half
    rdma = deep_ep.Buffer.get_low_latency_rdma_size_hint(args.ll_tokens, args.hidden, world, args.experts)
    buffer = deep_ep.Buffer(None, num_nvl_bytes=nvl, num_rdma_bytes=rdma)
    result = {"rank": rank, "runtime": buffer.runtime}
    result.update(_normal_mode(buffer, args, rank, world))
    result.update(_low_latency(buffer, args, rank))
    everyone = [None] * world
    dist.all_gather_object(everyone, result)
    if rank == 0:
        Path(args.result).write_text(json.dumps(everyone))
    dist.destroy_process_group()


def _run_ep(args, world: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        result = os.path.join(tmp, "result.json")
        common = ["--world", str(world), "--init", os.path.join(tmp, "init"), "--result", result]
        for name in ("tokens", "hidden", "topk", "experts", "ll_tokens", "iters", "threads"):
            common += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
        procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), *common]) for r in range(world)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"EP = {world}: a rank failed ({codes})")
        return json.loads(Path(result).read_text())


OPS = [  # (row label, our key, gloo key, bytes key)
    ("normal dispatch (int8)", "dispatch", "dispatch gloo", "dispatch bytes"),
    ("normal dispatch (int8, cached handle)", "dispatch (cached)", "dispatch gloo", "dispatch bytes"),
    ("normal combine (bf16, out=)", "combine", "combine gloo", "combine bytes"),
    ("normal combine (bf16, fresh out)", "combine (fresh out)", "combine gloo", "combine bytes"),
    ("normal combine (bf16, experts' outputs in get_next_combine_buffer)", "combine (in place)", "combine gloo",
     "combine bytes"),
    ("low-latency dispatch + combine", "low-latency dispatch + combine", "low-latency gloo there and back",
     "low-latency bytes"),
    ("low-latency dispatch + combine (zero copy)", "low-latency dispatch + combine (zero copy)",
     "low-latency gloo there and back", "low-latency bytes"),
]  # fmt: skip


def _report(results: dict[int, list[dict]], args) -> tuple[str, list[dict]]:
    def mean(ranks, key):
        return statistics.mean(r[key] for r in ranks)

    rows = []
    for world, ranks in results.items():
        copy_gbs = mean(ranks, "copy bytes") / mean(ranks, "copy") / 1e3
        for label, ours, gloo, nbytes in OPS:
            us, gloo_us, b = mean(ranks, ours), mean(ranks, gloo), mean(ranks, nbytes)
            rows.append({"op": label, "ep": world, "us": round(us, 1), "gloo_us": round(gloo_us, 1),
                         "mb_per_rank": round(b / 1e6, 2), "gbs": round(b / us / 1e3, 2),
                         "copy_gbs": round(copy_gbs, 2), "pct_copy": round(100 * b / us / 1e3 / copy_gbs),
                         "x_gloo": round(gloo_us / us, 2)})  # fmt: skip
    lines = [
        "# deep_ep",
        "",
        f"torch {torch.__version__}, {args.threads} thread(s) per rank, {os.cpu_count()} CPUs, "
        f"transport: {results[next(iter(results))][0]['runtime']}; N = {args.tokens} tokens per rank, hidden "
        f"{args.hidden}, top-{args.topk} of {args.experts} experts; low-latency T = {args.ll_tokens}.",
        "",
        "µs: median per rank (each iteration starts after a barrier; ours, gloo's and the copy timed in turn, "
        "4 calls at a time), averaged over ranks. MB: DeepEP's bytes per "
        "rank (normal: received rows x (H + 4) for int8, x 2H for bf16; low-latency: per (token, expert) "
        "H + H/32 + 16 there plus 2H back). % copy: GB/s over `dst.copy_(src)` of N x H bf16 on every rank at once, "
        "timed in turn with the normal-mode calls. gloo: `all_to_all_single` of the same rows into a preallocated "
        "buffer; x gloo = gloo µs / µs.",
        "",
        "| op | EP | µs | gloo µs | x gloo | MB/rank | GB/s | copy GB/s | % copy |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(f"| {r['op']} | {r['ep']} | {r['us']} | {r['gloo_us']} | {r['x_gloo']} | {r['mb_per_rank']} | "
                     f"{r['gbs']} | {r['copy_gbs']} | {r['pct_copy']}% |")  # fmt: skip
    return "\n".join(lines) + "\n", rows


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['op']}\nEP {r['ep']}" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.5 * len(rows) + 1.5))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["us"] / 1e3 for r in rows], height=0.4, label="deep_ep")
    ax.barh([i - 0.2 for i in y], [r["gloo_us"] / 1e3 for r in rows], height=0.4, label="gloo all_to_all_single")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.set_xlabel("ms per call (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write deep_ep.md / .json / .png here")
    p.add_argument("--ranks", default="2,4", help="EP sizes to run, comma-separated")
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--hidden", type=int, default=7168)
    p.add_argument("--topk", type=int, default=8)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--ll-tokens", type=int, default=128)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="few iterations (a smoke run)")
    p.add_argument("--device", default="cpu", help="only cpu: the transports run on host memory")
    for hidden in ("--rank", "--world", "--init", "--result"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.rank is not None:
        args.rank, args.world = int(args.rank), int(args.world)
        return _rank_main(args)
    if args.quick:
        args.iters = 3
    results = {int(w): _run_ep(args, int(w)) for w in args.ranks.split(",")}
    text, rows = _report(results, args)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "deep_ep.md").write_text(text)
        (args.out / "deep_ep.json").write_text(json.dumps({"rows": rows, "ranks": results}, indent=1))
        _plot(rows, args.out / "deep_ep.png")


if __name__ == "__main__":
    main()
