"""Malformed input raises a clear exception naming the argument, before any KV memory is read."""

import pytest
import sgl_npu_attention as ops
import torch


def _inputs(batch=2, q_heads=4, kv_heads=2, d=32, blocks=6, page=16, dtype=torch.bfloat16):
    q = torch.randn(batch, q_heads, d).to(dtype)
    k = torch.randn(blocks, page, kv_heads, d).to(dtype)
    v = torch.randn(blocks, page, kv_heads, d).to(dtype)
    table = torch.arange(batch * 3, dtype=torch.int32).view(batch, 3)
    lens = torch.full((batch,), 20, dtype=torch.int32)
    return [q, k, v, table, lens]


def _with(index, value, **kw):
    args = _inputs(**kw)
    args[index] = value(args[index]) if callable(value) else value
    return args


CASES = {
    "heads do not divide": (_inputs(q_heads=3), "multiple"),
    "head_dim mismatch": (_with(1, lambda k: k[..., :16].contiguous()), "head_dim"),
    "cache dtype": (_with(2, lambda v: v.float()), "v_cache"),
    "3-D cache": (_with(1, lambda k: k[0]), "k_cache"),
    "int64 block_table": (_with(3, lambda t: t.long()), "block_table"),
    "seq_lens shape": (_with(4, lambda n: n[:1]), "seq_lens"),
    "q dims": (_with(0, lambda q: q[0]), "q must be"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_malformed_input_names_the_argument(case, device):
    args, needle = CASES[case]
    with pytest.raises(RuntimeError, match=needle):
        ops.decode_attention(*[a.to(device) for a in args])


@pytest.mark.parametrize(
    "table_value,lens_value,needle",
    [(6, 20, "block_table"), (-1, 20, "block_table"), (0, 49, "seq_lens"), (0, -1, "seq_lens")],
)
def test_pages_outside_the_cache_raise_and_leave_out_untouched(table_value, lens_value, needle):
    q, k, v, table, lens = _inputs()
    table[1, 1] = table_value
    lens[1] = lens_value
    out = torch.full((2, 4, 32), 3.0, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=needle):
        ops.decode_attention(q, k, v, table, lens, out=out)
    assert (out == 3).all()
    from sgl_npu_attention import _accelerator  # the reference (device without Triton) path checks the same

    with pytest.raises(RuntimeError, match="seq_lens|block_table"):
        _accelerator._ref_decode(q, k, v, table, lens, 0.1, None, -1, out)


def _extend_args(cu, lens, device="cpu"):
    _, k, v, table, _ = _inputs()
    q = torch.randn(6, 4, 32, dtype=torch.bfloat16)
    args = [q, k, v, table, torch.tensor(cu, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32)]
    return [a.to(device) for a in args]


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_extend_cu_seqlens_shape(device):
    with pytest.raises(RuntimeError, match="cu_seqlens_q"):
        ops.extend_attention(*_extend_args([0, 6], [20, 20], device))
    q, k, v, table, _, _ = _extend_args([0, 3, 6], [20, 20], device)
    no_requests = (table[:0], torch.zeros(1, dtype=torch.int32, device=device), table.new_zeros(0))
    with pytest.raises(RuntimeError, match="cu_seqlens_q|at least one request"):
        ops.extend_attention(q, k, v, *no_requests)


@pytest.mark.parametrize("cu,lens,needle", [([0, 3, 5], [20, 20], "cu_seqlens_q"), ([0, 3, 6], [20, 2], "part of")])
def test_extend_request_values(cu, lens, needle):
    out = torch.full((6, 4, 32), 3.0, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=needle):
        ops.extend_attention(*_extend_args(cu, lens), out=out)
    assert (out == 3).all()


def _mla(batch=2, q_heads=4, dl=32, dr=8, blocks=6, page=16, dtype=torch.bfloat16):
    q = torch.randn(batch, q_heads, dl + dr).to(dtype)
    nope = torch.randn(blocks, page, 1, dl).to(dtype)
    rope = torch.randn(blocks, page, 1, dr).to(dtype)
    table = torch.arange(batch * 3, dtype=torch.int32).view(batch, 3)
    lens = torch.full((batch,), 20, dtype=torch.int32)
    return [q, nope, rope, table, lens]


def _mla_with(index, value):
    args = _mla()
    args[index] = value(args[index])
    return args


MLA_CASES = {
    "q dims": (_mla_with(0, lambda q: q[0]), "q must be"),
    "q width": (_mla_with(0, lambda q: q[..., :36].contiguous()), "latent dim 32 \\+ the rope dim 8"),
    "two kv heads": (_mla_with(1, lambda c: c.expand(-1, -1, 2, -1)), "kv_nope_cache must have one"),
    "rope pages": (_mla_with(2, lambda c: c[:, :8].contiguous()), "kv_rope_cache must have"),
    "3-D cache": (_mla_with(1, lambda c: c[:, :, 0]), "kv_nope_cache must be"),
    "cache dtype": (_mla_with(2, lambda c: c.float()), "kv_rope_cache"),
    "int64 block_table": (_mla_with(3, lambda t: t.long()), "block_table"),
    "seq_lens dtype": (_mla_with(4, lambda n: n.long()), "seq_lens"),
}


@pytest.mark.parametrize("case", list(MLA_CASES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_mla_malformed_input_names_the_argument(case, device):
    args, needle = MLA_CASES[case]
    with pytest.raises(RuntimeError, match=needle):
        ops.decode_mla(*[a.to(device) for a in args], 0.1)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_mla_block_table_row_per_token(device):
    q, nope, rope, table, lens = _mla()
    table, lens = torch.cat([table, table]), torch.cat([lens, lens])  # 4 requests for 2 query tokens
    with pytest.raises(RuntimeError, match="block_table must have a row per query token"):
        ops.decode_mla(*[a.to(device) for a in (q, nope, rope, table, lens)], 0.1)


@pytest.mark.parametrize(
    "table_value,lens_value,needle",
    [(6, 20, "block_table"), (-1, 20, "block_table"), (0, 49, "seq_lens"), (0, -1, "seq_lens")],
)
def test_mla_pages_outside_the_cache_raise_and_leave_out_untouched(table_value, lens_value, needle):
    q, nope, rope, table, lens = _mla()
    table[1, 1] = table_value
    lens[1] = lens_value
    out = torch.full((2, 4, 32), 3.0, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=needle):
        ops.decode_mla(q, nope, rope, table, lens, 0.1, out=out)
    assert (out == 3).all()
    from sgl_npu_attention import _accelerator

    with pytest.raises(RuntimeError, match="seq_lens|block_table"):
        _accelerator._ref_mla(q, nope, rope, table, lens, 0.1, out)
    assert (out == 3).all()


def _indexer(tokens=3, heads=4, d=16, blocks=6, page=16, dtype=torch.bfloat16):
    q = torch.randn(tokens, heads, d).to(dtype)
    k = torch.randn(blocks, page, 1, d).to(dtype)
    w = torch.randn(tokens, heads)
    table = torch.arange(6, dtype=torch.int32).view(2, 3)
    cu, lens = torch.tensor([0, 1, 3], dtype=torch.int32), torch.tensor([20, 30], dtype=torch.int32)
    return [q, k, w, table, cu, lens]


def _indexer_with(index, value):
    args = _indexer()
    args[index] = value(args[index])
    return args


INDEXER_CASES = {
    "q dims": (_indexer_with(0, lambda q: q[0]), "q must be"),
    "two kv heads": (_indexer_with(1, lambda k: k.expand(-1, -1, 2, -1)), "k_cache must have one kv head"),
    "head_dim": (_indexer_with(1, lambda k: k[..., :8].contiguous()), "head_dim"),
    "cache dtype": (_indexer_with(1, lambda k: k.half()), "k_cache"),
    "weights shape": (_indexer_with(2, lambda w: w[:, :3]), "weights must have shape"),
    "weights dtype": (_indexer_with(2, lambda w: w.half()), "weights must be float32 or q's dtype"),
    "int64 block_table": (_indexer_with(3, lambda t: t.long()), "block_table"),
    "cu_seqlens shape": (_indexer_with(4, lambda c: c[:2]), "cu_seqlens_q"),
    "seq_lens shape": (_indexer_with(5, lambda n: n[:1]), "seq_lens"),
}


@pytest.mark.parametrize("case", list(INDEXER_CASES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_indexer_malformed_input_names_the_argument(case, device):
    args, needle = INDEXER_CASES[case]
    with pytest.raises(RuntimeError, match=needle):
        ops.lightning_indexer(*[a.to(device) for a in args], sparse_count=8)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_indexer_sparse_count_and_out(device):
    args = [a.to(device) for a in _indexer()]
    with pytest.raises(RuntimeError, match="sparse_count must be positive"):
        ops.lightning_indexer(*args, sparse_count=0)
    with pytest.raises(RuntimeError, match="out must be"):
        ops.lightning_indexer(*args, sparse_count=8, out=torch.empty(3, 8, dtype=torch.int64, device=device))
    with pytest.raises(RuntimeError, match="out must have shape"):
        ops.lightning_indexer(*args, sparse_count=8, out=torch.empty(3, 7, dtype=torch.int32, device=device))


@pytest.mark.parametrize(
    "table_value,lens,cu,needle",
    [
        (6, [20, 30], [0, 1, 3], "block_table"),
        (-1, [20, 30], [0, 1, 3], "block_table"),
        (0, [20, 49], [0, 1, 3], "seq_lens"),
        (0, [20, 30], [0, 1, 2], "cu_seqlens_q"),
        (0, [20, 1], [0, 1, 3], "part of"),
    ],
)
def test_indexer_bad_values_raise_and_leave_out_untouched(table_value, lens, cu, needle):
    q, k, w, table, _, _ = _indexer()
    table[1, 1] = table_value
    args = [q, k, w, table, torch.tensor(cu, dtype=torch.int32), torch.tensor(lens, dtype=torch.int32)]
    out = torch.full((3, 8), 3, dtype=torch.int32)
    with pytest.raises(RuntimeError, match=needle):
        ops.lightning_indexer(*args, sparse_count=8, out=out)
    assert (out == 3).all()
    from sgl_npu_attention import _accelerator

    with pytest.raises(RuntimeError, match="seq_lens|block_table|cu_seqlens_q|part of"):
        _accelerator._indexer(*args, 8, out)
    assert (out == 3).all()


def _bmm(m=4, heads=2, k=8, n=6, dtype=torch.float32):
    return [torch.randn(m, heads, k).to(dtype), torch.randn(heads, k, n).to(dtype), torch.empty(m, heads, n).to(dtype)]


def _bmm_with(index, value):
    args = _bmm()
    args[index] = value(args[index])
    return args


BMM_CASES = {
    "a dims": (_bmm_with(0, lambda a: a[0]), "a must be"),
    "b dims": (_bmm_with(1, lambda b: b[0]), "b must be"),
    "b heads": (_bmm_with(1, lambda b: b[:1]), "b must be \\[2, 8, N\\]"),
    "b depth": (_bmm_with(1, lambda b: b[:, :7]), "b must be"),
    "b dtype": (_bmm_with(1, lambda b: b.half()), "b must"),
    "int a": (_bmm_with(0, lambda a: a.int()), "a must be float32"),
    "out shape": (_bmm_with(2, lambda o: o[:, :, :5]), "out must have shape"),
    "out dtype": (_bmm_with(2, lambda o: o.bfloat16()), "out must"),
    "a strided last dim": (_bmm_with(0, lambda a: a.transpose(1, 2).contiguous().transpose(1, 2)), "a must be contig"),
}


@pytest.mark.parametrize("case", list(BMM_CASES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_bmm_malformed_input_names_the_argument(case, device):
    args, needle = BMM_CASES[case]
    a, b, out = (t.to(device) for t in args)
    with pytest.raises(RuntimeError, match=needle):
        ops.batch_matmul_transpose(a, b, out=out)


def test_bmm_out_that_overlaps_its_inputs_or_itself_is_refused():
    # every task reads all of a and b while others write their rows of out: shared memory would be read half-written
    a, b = torch.randn(4, 2, 32), torch.randn(2, 32, 32)
    for out, needle in [
        (a[:, :, :32], "out must not overlap a"),  # out = a
        (b.view(2, 32, 32)[:, :4, :].transpose(0, 1), "out must not overlap b"),  # out inside b's memory
        (torch.empty(1, 2, 32).expand(4, 2, 32), "out must not overlap itself"),
    ]:
        with pytest.raises(RuntimeError, match=needle):
            ops.batch_matmul_transpose(a, b, out=out)
    out = torch.empty(4, 2, 32)
    assert ops.batch_matmul_transpose(a, b, out=out) is out  # apart: fine


def test_attention_outputs_that_overlap_themselves_are_refused():
    # an expand()ed out would be written by several threads at once
    q, k, v, table, lens = _inputs()
    with pytest.raises(RuntimeError, match="out must not overlap itself"):
        ops.decode_attention(q, k, v, table, lens, out=torch.empty(1, 4, 32, dtype=torch.bfloat16).expand(2, 4, 32))
    q, nope, rope, table, lens = _mla()
    out = torch.empty(2, 1, 32, dtype=torch.bfloat16).expand(2, 4, 32)
    with pytest.raises(RuntimeError, match="out must not overlap itself"):
        ops.decode_mla(q, nope, rope, table, lens, 0.1, out=out)


def test_outputs_that_share_memory_with_what_is_still_read_are_refused():
    # the indexer's later waves re-read block_table after earlier ones wrote out; attention's merge reads sinks
    args = _indexer()
    out = torch.empty(3, 8, dtype=torch.int32)
    table = out.view(-1)[:6].view(2, 3)
    table.copy_(args[3])
    with pytest.raises(RuntimeError, match="out must not overlap block_table"):
        ops.lightning_indexer(*args[:3], table, *args[4:], sparse_count=8, out=out)
    with pytest.raises(RuntimeError, match="out must not overlap itself"):
        ops.lightning_indexer(*args, sparse_count=8, out=torch.empty(1, 8, dtype=torch.int32).expand(3, 8))
    q, k, v, table, lens = _inputs()
    out = torch.empty(2, 4, 32, dtype=torch.bfloat16)
    sinks = out.view(torch.float32).view(-1)[:4]
    with pytest.raises(RuntimeError, match="out must not overlap sinks"):
        ops.decode_attention(q, k, v, table, lens, sinks=sinks, out=out)


def test_indexer_sparse_count_checked_before_out_is_made():
    with pytest.raises(RuntimeError, match="sparse_count must be positive, got -1"):
        ops.lightning_indexer(*_indexer(), sparse_count=-1)


def test_the_checks_the_fakes_and_device_paths_share_match_the_cpu_ops():
    # meta tensors run the Python checks (fake impls; the Triton launchers call the same ones)
    q, k, v, table, lens = [t.to("meta") for t in _inputs()]
    out = torch.empty(2, 4, 32, dtype=torch.bfloat16, device="meta")
    cases = {
        "q must be contiguous in its last dim": dict(q=q.transpose(1, 2).contiguous().transpose(1, 2)),
        "seq_lens must be contiguous": dict(lens=torch.empty(2, 2, dtype=torch.int32, device="meta")[:, 0]),
        "out must not overlap itself": dict(out=out[:1].expand(2, 4, 32)),
        "sinks must be contiguous": dict(sinks=torch.empty(4, 2, device="meta")[:, 0]),
    }
    for needle, change in cases.items():
        args = dict(q=q, lens=lens, out=out, sinks=None) | change
        with pytest.raises(RuntimeError, match=needle):
            ops.decode_attention(args["q"], k, v, table, args["lens"], sinks=args["sinks"], out=args["out"])


@pytest.mark.parametrize("sm_scale", [float("nan"), float("inf"), 1e300])
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_non_finite_softmax_scale_is_refused(sm_scale, device):
    # NaN or inf zeroed (fp32) or NaN-ed (bf16) every output, silently; 1e300 is inf in float32
    args = [a.to(device) for a in _inputs()]
    with pytest.raises(RuntimeError, match="sm_scale must be finite"):
        ops.decode_attention(*args, sm_scale=sm_scale)
    q, k, v, table, lens = args
    cu = torch.tensor([0, 1, 2], dtype=torch.int32, device=device)
    with pytest.raises(RuntimeError, match="sm_scale must be finite"):
        ops.extend_attention(q, k, v, table, cu, lens, sm_scale=sm_scale)


NAMING_CASES = {  # inputs that used to fail in the wrappers with errors naming no argument
    "1-D q": (lambda q, k, v, t, n: ops.decode_attention(q[0, 0], k, v, t, n), RuntimeError, "q must be .tokens"),
    "list q": (lambda q, k, v, t, n: ops.decode_attention([1.0], k, v, t, n), TypeError, "q must be a torch.Tensor"),
    "empty head_dim": (
        lambda q, k, v, t, n: ops.decode_attention(q[..., :0], k, v, t, n),
        RuntimeError,
        "non-empty head_dim",
    ),
    "None v_cache": (lambda q, k, v, t, n: ops.decode_attention(q, k, None, t, n), TypeError, "v_cache must be a"),
    "None seq_lens": (lambda q, k, v, t, n: ops.decode_attention(q, k, v, t, None), RuntimeError, "seq_lens must be a"),
    "float sliding_window": (  # int() truncated it: 2.5 kept the last 2 keys
        lambda q, k, v, t, n: ops.decode_attention(q, k, v, t, n, sliding_window=2.5),
        TypeError,
        "sliding_window must be an int, got 2.5",
    ),
    "bool sliding_window": (
        lambda q, k, v, t, n: ops.extend_attention(
            q, k, v, t, torch.tensor([0, 1, 2], dtype=torch.int32), n, sliding_window=True
        ),  # fmt: skip
        TypeError,
        "sliding_window must be an int",
    ),
    "float sparse_count": (
        lambda *_: ops.lightning_indexer(*_indexer(), sparse_count=8.5),
        TypeError,
        "sparse_count must be an int, got 8.5",
    ),
    "2-D bmm a": (
        lambda *_: ops.batch_matmul_transpose(torch.randn(2, 3), torch.randn(2, 3, 4)),
        RuntimeError,
        "a must be",
    ),
}


@pytest.mark.parametrize("case", list(NAMING_CASES))
def test_malformed_arguments_are_named(case):
    fn, error, needle = NAMING_CASES[case]
    with pytest.raises(error, match=needle):
        fn(*_inputs())
