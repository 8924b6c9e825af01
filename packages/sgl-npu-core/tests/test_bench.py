"""The benchmark harness: timing returns sane medians, rows derive their ratios, reports write all three files."""

import json
import time

import pytest
import torch
from sgl_npu_core.bench import Case, Report, Row, copy_bandwidth_gbs, copy_call, measure, time_us, time_us_alternating

FACTS = {"torch": torch.__version__, "threads": 1, "cpu": "test", "copy_gbs": 10.0, "copy_mb": 1.0}


def test_time_us_median_positive_and_respects_min_iters():
    calls = []
    us = time_us(lambda: calls.append(1), warmup=2, min_iters=7, min_time_s=0.0)
    assert us > 0
    assert len(calls) >= 7 + 1


def test_time_us_measures_sleep():
    us = time_us(lambda: time.sleep(0.002), warmup=1, min_iters=3, min_time_s=0.01)
    assert 2000 <= us < 50_000


def test_time_us_slow_fn_gets_short_warmup():
    calls = []
    time_us(lambda: (calls.append(1), time.sleep(0.03)), warmup=5, min_iters=2, min_time_s=0.02)
    assert len(calls) == 1 + 2  # one warm-up call already took min_time_s


def test_time_us_alternating_takes_the_calls_in_turn():
    calls = []
    fast, slow = (lambda: calls.append("a")), (lambda: (calls.append("b"), time.sleep(0.002)))
    a_us, b_us = time_us_alternating([fast, slow], warmup=1, min_iters=4, min_time_s=0.0, block_s=0.0)
    assert calls[:2] == ["a", "b"]  # one warm-up call each
    # then blocks in turn, each an untimed call (it reloads the caches) and, with block_s=0, one timed call
    assert calls[2:] == ["a", "a", "b", "b"] * 4
    assert a_us < 2000 <= b_us


def test_measure_times_the_yardsticks_in_turn():
    x = torch.ones(1 << 12)
    y = torch.empty_like(x)
    case = Case(lambda: torch.mul(x, 2, out=y), lambda: x * 2, lambda t: t * 2, (x,), 2 * x.nbytes, flops=x.numel())
    timing = {"warmup": 1, "min_iters": 2, "min_time_s": 0.0}
    row = measure("mul", case, "4096", torch.float32, copy_call(x.nbytes), True, timing, mem_copy=True)
    assert row.copy_gbs > 0 and row.pct_copy > 0
    assert row.mem_copy_gbs > 0 and row.pct_mem_copy == pytest.approx(100 * row.gbs / row.mem_copy_gbs)
    assert row.gflops == pytest.approx(x.numel() / row.us / 1e3) and row.gemm_gflops > 0 and row.pct_gemm > 0
    assert row.eager_us > 0 and row.compile_us > 0


def test_copy_bandwidth_positive():
    assert copy_bandwidth_gbs(1 << 16, min_time_s=0.01) > 0


def test_row_derives_bandwidth_and_speedups():
    row = Row(
        "op", "2x3", "bfloat16", us=10.0, us_fresh=20.0, bytes=100_000, copy_gbs=20.0, eager_us=60.0, compile_us=40.0
    )
    assert row.gbs == pytest.approx(10.0)
    assert row.pct_copy == pytest.approx(50.0)
    assert row.pct_mem_copy is None  # not measured
    assert Row("op", "2x3", "bfloat16", us=10.0, bytes=100_000, mem_copy_gbs=40.0).pct_mem_copy == pytest.approx(25.0)
    assert row.vs_eager == pytest.approx(3.0)  # against the fresh-output time
    assert row.vs_compile == pytest.approx(2.0)
    bare = Row("op", "2x3", "float16", us=5.0)
    assert bare.gbs is None and bare.vs_eager is None and bare.vs_compile is None and bare.pct_gemm is None
    compute = Row("op", "2x3", "float32", us=10.0, flops=2_000_000, gemm_gflops=400.0)
    assert compute.gflops == pytest.approx(200.0) and compute.pct_gemm == pytest.approx(50.0)


def test_report_writes_md_json_png(tmp_path, capsys):
    report = Report("unit", facts=FACTS, notes=["a note"])
    report.add(Row("rmsnorm", "1x4096", "bfloat16", 3.0, 4.0, 16_384, 12.0, 30.0, 8.0))
    report.add(Row("silu_and_mul", "128x4096", "float16", 50.0))  # nothing but the time measured
    paths = report.write(tmp_path / "out")

    assert sorted(p.name for p in paths.values()) == ["unit.json", "unit.md", "unit.png"]
    md = paths["md"].read_text()
    assert "torch " + torch.__version__ in md and "copy 10.0 GB/s" in md and "a note" in md
    assert "| rmsnorm | 1x4096 | bfloat16 | 3.0 | 4.0 |" in md
    assert "| silu_and_mul | 128x4096 | float16 | 50.0 | – |" in md

    doc = json.loads(paths["json"].read_text())
    assert doc["facts"] == FACTS
    assert [r["op"] for r in doc["rows"]] == ["rmsnorm", "silu_and_mul"]
    assert doc["rows"][0]["vs_compile"] == pytest.approx(2.0)

    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.print()
    assert "| rmsnorm |" in capsys.readouterr().out
