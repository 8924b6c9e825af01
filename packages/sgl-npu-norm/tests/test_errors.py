"""Malformed input raises a clear exception naming the argument, from the CPU kernel and the fake impl."""

import pytest
import sgl_npu_norm as ops
import torch

BF16 = torch.bfloat16


def _x(*shape, dtype=BF16, device="cpu"):
    return torch.randn(shape, dtype=dtype, device="cpu").to(device)


CASES = {
    "hidden size mismatch": (lambda d: ops.rmsnorm(_x(4, 64, device=d), _x(63, device=d)), "weight"),
    "int x": (lambda d: ops.rmsnorm(torch.ones(4, 64, dtype=torch.int32, device=d), _x(64, device=d)), "x must be"),
    "2-D weight": (lambda d: ops.rmsnorm(_x(4, 64, device=d), _x(1, 64, device=d)), "weight"),
    "empty last dim": (lambda d: ops.rmsnorm(_x(4, 0, device=d), _x(0, device=d)), "non-empty last dim"),
    "non-contiguous last dim": (lambda d: ops.rmsnorm(_x(64, 4, device=d).t(), _x(64, device=d)), "last dim"),
    "rows not evenly spaced": (lambda d: ops.rmsnorm(_x(2, 7, 64, device=d)[:, :3], _x(64, device=d)), "collapse"),
    "out wrong dtype": (
        lambda d: ops.rmsnorm(_x(4, 64, device=d), _x(64, device=d), out=_x(4, 64, dtype=torch.float16, device=d)),
        "out",
    ),
    "out wrong shape": (lambda d: ops.rmsnorm(_x(4, 64, device=d), _x(64, device=d), out=_x(4, 32, device=d)), "out"),
    "residual shape": (
        lambda d: ops.fused_add_rmsnorm(_x(4, 64, device=d), _x(3, 64, device=d), _x(64, device=d)),
        "residual",
    ),
    "residual dtype": (
        lambda d: ops.add_rmsnorm_bias(_x(4, 64, device=d), _x(4, 64, dtype=torch.float32, device=d), _x(64, device=d)),
        "residual",
    ),
    "bias size": (lambda d: ops.rmsnorm_bias(_x(4, 64, device=d), _x(64, device=d), _x(65, device=d)), "bias"),
    "quant_scale size": (
        lambda d: ops.rmsnorm_bias(_x(4, 64, device=d), _x(64, device=d), None, 1e-6, _x(8, device=d)),
        "quant_scale",
    ),
    "odd gated width": (lambda d: ops.silu_and_mul(_x(4, 63, device=d)), "even"),
    "gated out shape": (lambda d: ops.swiglu_oai(_x(4, 64, device=d), out=_x(4, 64, device=d)), "out"),
    "int8 input": (lambda d: ops.swiglu_quant(torch.ones(4, 64, dtype=torch.int8, device=d)), "x must be"),
    "group_list dtype": (lambda d: ops.swiglu_quant(_x(4, 64, device=d), torch.ones(2, device=d)), "group_list"),
    "group_list type": (
        lambda d: ops.swiglu_quant(_x(4, 64, device=d), torch.ones(2, dtype=torch.int32, device=d), 2),
        "group_list_type",
    ),
    "split_sum_squares widths": (lambda d: _sum_squares(_x(3, 64, device=d), 40, 25), "width0 and width1"),
    "split_sum_squares zero width": (lambda d: _sum_squares(_x(3, 64, device=d), 0, 8), "width0 and width1"),
    "split_sum_squares out shape": (lambda d: _sum_squares(_x(3, 64, device=d), 8, 8, (3, 1)), "out must have shape"),
    "split_sum_squares out dtype": (
        lambda d: _sum_squares(_x(3, 64, device=d), 8, 8, out=_x(3, 2, device=d)),
        "out must be",
    ),
}


def _sum_squares(x, width0, width1, shape=None, out=None):
    out = torch.empty(shape or (x.shape[0], 2), device=x.device) if out is None else out
    torch.ops.sgl_npu_norm.split_sum_squares(x, width0, width1, out)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_malformed_input_names_the_argument(case, device):
    fn, needle = CASES[case]
    with pytest.raises((RuntimeError, ValueError), match=needle):
        fn(device)


BIG = 2**63 - 1  # counts whose int64 sum wraps: to -1, and to INT64_MIN


@pytest.mark.parametrize(
    "group_list,group_list_type",
    [([3, 2], 1), ([2, 5], 0), ([-1, 2], 1), ([3, 1], 0), ([1, BIG, BIG], 1), ([1, BIG], 1)],
)
def test_group_list_beyond_rows_or_malformed(group_list, group_list_type):
    q = torch.full((4, 32), 5, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="group_list"):
        ops.swiglu_quant(_x(4, 64), torch.tensor(group_list), group_list_type, out=(q, torch.empty(4)))
    assert (q == 5).all()  # checked before anything is written
    from sgl_npu_norm import _accelerator  # the device reference path makes the same data checks

    with pytest.raises(RuntimeError, match="group_list"):
        _accelerator._ref_swiglu_quant(_x(4, 64), torch.tensor(group_list), group_list_type, False, 7.0, q,
                                       torch.empty(4))  # fmt: skip


def test_head_counts_whose_width_wraps_are_refused():
    # 4 * (2**62 + 16) wraps to 64, qkv's width: the check must not take the wrapped product
    qkv, out = torch.randn(1, 64), (torch.empty(1, 64), torch.empty(1, 0), torch.empty(1, 0))
    with pytest.raises(RuntimeError, match="must fit in qkv"):
        ops.split_qkv_rmsnorm_mrope(qkv, None, None, torch.randn(3, 1, 64), num_q_heads=4, num_kv_heads=0,
                                    head_size=2**62 + 16, eps=None, mrope_section=[16, 8, 8], is_interleaved=False,
                                    out=out)  # fmt: skip


def test_weight_on_another_device():
    with pytest.raises((RuntimeError, ValueError), match="weight|device"):
        ops.rmsnorm(_x(4, 64), _x(64, device="meta"))


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_negative_eps_and_limit(device):
    with pytest.raises(RuntimeError, match="eps"):
        ops.rmsnorm(_x(4, 64, device=device), _x(64, device=device), eps=-1.0)
    with pytest.raises(RuntimeError, match="limit"):
        ops.swiglu_oai(_x(4, 64, device=device), limit=0.0)
    with pytest.raises(RuntimeError, match="limit"):
        ops.swiglu_quant(_x(4, 64, device=device), do_limit=True, limit=-1.0)


def _qkv(d, q=256, kv=128, tokens=3):
    return _x(tokens, q + 2 * kv, device=d)


def _tables(d, tokens=3, width=64):
    return _x(tokens, width, dtype=torch.float32, device=d), _x(tokens, width, dtype=torch.float32, device=d)


def _mrope(section, d):
    """split_qkv_rmsnorm_mrope on small inputs with the given mrope_section (rope_dim 64)."""
    args = (_x(3, 4 * 128, device=d), _x(128, device=d), _x(128, device=d), _x(3, 3, 64, device=d), 2, 1, 128, 1e-6)
    return ops.split_qkv_rmsnorm_mrope(*args, section, False)


ROPE_CASES = {
    "qkv width": (lambda d: ops.split_qkv_rmsnorm_rope(_x(3, 500, device=d), *_tables(d), 256, 128, 64), "qkv"),
    "hidden not in heads": (lambda d: ops.split_qkv_rmsnorm_rope(_qkv(d), *_tables(d), 256, 128, 96), "head_dim"),
    "qk weight size": (
        lambda d: ops.split_qkv_rmsnorm_rope(_qkv(d), *_tables(d), 256, 128, 64, 1e-6, _x(63, device=d)),
        "weight",
    ),
    "cos too narrow": (
        lambda d: ops.split_qkv_rmsnorm_rope(_qkv(d), _x(3, 64, device=d), _x(3, 32, device=d), 256, 128, 64),
        "cos",
    ),
    "odd rope_dim": (lambda d: ops.split_qkv_rmsnorm_rope(_qkv(d), *_tables(d, width=63), 256, 128, 64), "rope_dim"),
    "rope_dim beyond head": (
        lambda d: ops.split_qkv_rmsnorm_rope(_qkv(d), *_tables(d, width=128), 256, 128, 64),
        "rope_dim",
    ),
    "cos rows": (lambda d: ops.split_qkv_rmsnorm_rope(_qkv(d), *_tables(d, tokens=2), 256, 128, 64), "row per token"),
    "float positions": (
        lambda d: ops.split_qkv_rmsnorm_rope_pos_cache(
            _qkv(d), torch.zeros(3, device=d), _x(9, 64, device=d), 256, 128, 64
        ),
        "positions",
    ),  # fmt: skip
    "out shape": (
        lambda d: ops.split_qkv_rmsnorm_rope(
            _qkv(d), *_tables(d), 256, 128, 64, out=(_x(3, 256, device=d), _x(3, 128, device=d), _x(3, 64, device=d))
        ),
        "v must have shape",
    ),  # fmt: skip
    "mrope sections": (lambda d: _mrope([16, 8, 4], d), "mrope_section"),
    "negative mrope section": (lambda d: _mrope([-4, 20, 16], d), "mrope_section must be 3 ints >= 0"),
    "mrope section of floats": (lambda d: _mrope([16.0, 8, 8], d), "mrope_section must be 3 ints"),
    "no mrope section": (lambda d: _mrope(None, d), "mrope_section must be 3 ints"),
    "mqa query dims": (
        lambda d: ops.fused_rope_qk_mqa(_x(3, 128, device=d), _x(3, 1, 128, device=d), _x(3, 64, device=d), 64),
        "query",
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(ROPE_CASES))
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_rope_malformed_input_names_the_argument(case, device):
    fn, needle = ROPE_CASES[case]
    with pytest.raises((RuntimeError, ValueError), match=needle):
        fn(device)


def test_positions_outside_the_cache_leave_outputs_untouched():
    qkv, cache = _qkv("cpu"), _x(8, 64, dtype=torch.float32)
    out = tuple(torch.full((3, w), 7.0, dtype=BF16) for w in (256, 128, 128))
    for bad in ([0, 8, 1], [0, -1, 1]):
        with pytest.raises(RuntimeError, match="positions"):
            ops.split_qkv_rmsnorm_rope_pos_cache(qkv, torch.tensor(bad), cache, 256, 128, 64, 1e-6, out=out)
        assert all((o == 7).all() for o in out)
    query, key = _x(3, 128), _x(3, 64)
    before = query.clone(), key.clone()
    with pytest.raises(RuntimeError, match="positions"):
        ops.apply_rope_with_cos_sin_cache_inplace(torch.tensor([0, 1, 99]), query, key, 64, cache)
    assert torch.equal(query, before[0]) and torch.equal(key, before[1])


def _apply_rope_bad_key(query, out):
    ops.apply_rope_with_cos_sin_cache_inplace(torch.tensor([1, 2, 3]), query, _x(3, 3, 64), 64, _x(8, 64))


def _mqa_bad_key(query, out):
    ops.fused_rope_qk_mqa(query.view(3, 2, 64), _x(3, 1, 64, dtype=torch.float32), _x(3, 64), 64, out=out)


def _mla_bad_kv_weight(query, out):
    qkv_a = _x(3, 128 + 32 + 16)
    ops.fused_split_qk_norm(qkv_a, _x(128), _x(31), 128, 32, 16, 1e-6, out=(query, *out[1:]))


@pytest.mark.parametrize(
    "call,needle",
    [
        (_apply_rope_bad_key, "query and key must be .tokens, heads . head_size., got 2 and 3 dims"),
        (_mqa_bad_key, "x2: key, out2: k_out.: .*x2 must have the dtype of x"),
        (_mla_bad_kv_weight, "kv_a_weight must have shape .32."),
    ],
    ids=["apply_rope", "mqa", "mla_split"],
)  # fmt: skip
def test_a_bad_second_group_leaves_the_first_untouched(call, needle):
    """The ops that make one call per head group check the later groups before the first writes."""
    query = _x(3, 128)
    outs = (torch.full((3, 2, 64), 7.0, dtype=BF16), torch.full((3, 1, 64), 7.0, dtype=BF16))
    if call is _mla_bad_kv_weight:
        outs = (None, torch.full((3, 1, 32), 7.0, dtype=BF16), torch.full((3, 1, 16), 7.0, dtype=BF16))
    before = query.clone()
    with pytest.raises(RuntimeError, match=needle):
        call(query, outs)
    assert torch.equal(query, before)
    assert all((o == 7).all() for o in outs if o is not None)


def _elements(t):
    """The storage indices of a [rows, cols] view's elements."""
    rows = torch.arange(t.shape[0])[:, None] * t.stride(0)
    return set((t.storage_offset() + rows + torch.arange(t.shape[1])).flatten().tolist())


def test_overlap_checks_compare_rows_of_one_stride_exactly():
    """out and x as row views of one buffer (the C++ check_same_or_apart, and the Python one the fakes and device
    paths share): refused exactly where they share an element, unless out is x; interleaved rows pass."""
    from sgl_npu_norm import _meta

    g = torch.Generator().manual_seed(1)
    buf, w = torch.zeros(400, dtype=BF16), _x(8)
    refused = passed = 0
    for _ in range(400):
        r = lambda lo, hi: int(torch.randint(lo, hi + 1, (), generator=g))  # noqa: E731
        rows, stride = r(1, 4), r(8, 24)
        views = [buf.as_strided((rows, 8), (stride if r(0, 3) else r(8, 24), 1), r(0, 300)) for _ in range(2)]
        x, out = views
        shared = bool(_elements(x) & _elements(out))
        same = x.storage_offset() == out.storage_offset() and x.stride() == out.stride()
        rows_of_one_stride = rows == 1 or x.stride(0) == out.stride(0)
        for check in (lambda x, out: ops.rmsnorm(x, w, out=out), lambda x, out: _meta.check_norm(x, w, None, 1e-6, None, None, out)):  # fmt: skip  # noqa: E501
            if shared and not same:
                with pytest.raises(RuntimeError, match="out must not overlap x"):
                    check(x, out)
                refused += 1
            elif rows_of_one_stride:
                check(x, out)
                passed += 1
    assert refused > 50 and passed > 50


TABLES = _tables("cpu")


def _split_args(qkv, out):
    return (qkv, 64, 4, 2, False, None, None, None, None, 1e-6, False, True, None, False, *TABLES, None, 64,
            True, True, *out, None)  # fmt: skip


@pytest.mark.parametrize("checks", ["cpu op", "python"])
def test_split_outputs_overlapping_each_other_or_other_columns_are_refused(checks):
    from sgl_npu_norm import _meta

    run = torch.ops.sgl_npu_norm.split_qkv_norm_rope if checks == "cpu op" else _meta.check_split_qkv_norm_rope
    if checks == "python":  # the fakes' and device paths' checks take the op's arguments without the params
        run = lambda *a: _meta.check_split_qkv_norm_rope(*a[:5], *a[11:14], *a[20:])  # noqa: E731
    qkv, kv = _qkv("cpu"), _x(3, 128)
    cases = {
        "k must not overlap v": (_x(3, 256), kv, kv),
        "q must not overlap qkv's q columns": (qkv[:, 64:320], _x(3, 128), _x(3, 128)),
        "v must not overlap qkv's k columns": (_x(3, 256), _x(3, 128), qkv[:, 256:384]),
        "q must not overlap qkv's k columns": (qkv[:, 256:], _x(3, 128), _x(3, 128)),  # [k | v] as q
    }
    for needle, out in cases.items():
        with pytest.raises(RuntimeError, match=needle):
            run(*_split_args(qkv, out))


def test_split_in_place_on_its_own_columns_matches_fresh_outputs():
    qkv = _qkv("cpu")
    want = [torch.empty(3, w, dtype=BF16) for w in (256, 128, 128)]
    torch.ops.sgl_npu_norm.split_qkv_norm_rope(*_split_args(qkv, want))
    in_place = qkv.split([256, 128, 128], dim=-1)  # interleaved rows of one buffer, each apart from the others
    torch.ops.sgl_npu_norm.split_qkv_norm_rope(*_split_args(qkv, in_place))
    for got, w in zip(in_place, want, strict=True):
        assert torch.equal(got, w)


def test_split_in_place_and_broadcast_inputs_still_run():
    """What the overlap checks must let through: a broadcast qkv (row stride 0: a division by it crashed the
    first version of the check), mqa in place on query and key, and the gate layout's k and v in place."""
    cos, sin = _tables("cpu", tokens=4, width=32)
    row = torch.randn(256, dtype=BF16)
    got = ops.split_qkv_rmsnorm_rope(row.expand(4, 256), sin, cos, 128, 64, 64)
    want = ops.split_qkv_rmsnorm_rope(row.expand(4, 256).contiguous(), sin, cos, 128, 64, 64)
    assert all(torch.equal(g, w) for g, w in zip(got, want, strict=True))
    q, k, cs = _x(3, 2, 64), _x(3, 1, 64), _x(3, 64)
    fresh = ops.fused_rope_qk_mqa(q, k, cs, 64)
    ops.fused_rope_qk_mqa(q, k, cs, 64, out=(q, k))
    assert torch.equal(q, fresh[0]) and torch.equal(k, fresh[1])
    qkv = _x(3, 2 * 128 + 2 * 64)  # Qwen3-Next layout: q heads [q | gate], then k, v
    args = (sin[:3], cos[:3], 128, 64, 64, 32, 1e-6, _x(64), _x(64))
    want = ops.split_qkvgate_gemma_rmsnorm_rope(qkv, *args)
    out = (torch.empty(3, 128, dtype=BF16), qkv[:, 256:320], qkv[:, 320:], torch.empty(3, 128, dtype=BF16))
    ops.split_qkvgate_gemma_rmsnorm_rope(qkv, *args, out=out)  # k and v in place on their own columns
    assert all(torch.equal(o, w) for o, w in zip(out, want, strict=True))


def test_one_token_in_place_whatever_the_row_stride():
    # one row has no stride to agree on: the C++ op and the Python checks both take q as its own columns
    from sgl_npu_norm import _meta

    qkv = _x(1, 256 + 2 * 64)
    q = qkv.as_strided((1, 256), (999, 1))  # qkv's q columns, with another row stride
    out = (q, _x(1, 64), _x(1, 64))
    _meta.check_split_qkv_norm_rope(qkv, 64, 4, 1, False, True, None, False, *out, None)
    got = ops.split_qkv_rmsnorm_rope(qkv, *_tables("cpu", tokens=1), 256, 64, 64, out=out)
    assert got[0] is q


def test_rope_outputs_over_positions_are_refused():
    # positions are checked once, then indexed by per token: inside out, a written row made them out of range
    buf = torch.zeros(4 * 64, dtype=BF16)
    positions, out = buf.view(torch.int32)[:4].zero_(), buf.view(4, 1, 64)
    cache = _x(8, 64, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="out must not overlap positions"):
        torch.ops.sgl_npu_norm.head_norm_rope(_x(4, 1, 64), None, None, 0.0, False, False, None, cache[:, :32],
                                              cache[:, 32:], positions, 64, True, False, out)  # fmt: skip
    qkv = torch.zeros(4, 256, dtype=BF16)
    with pytest.raises(RuntimeError, match="q must not overlap positions"):
        ops.split_qkv_rmsnorm_rope_pos_cache(_x(4, 256), qkv.view(torch.int32)[:4, 0], cache, 128, 64, 64,
                                             out=(qkv[:, :128], _x(4, 64), _x(4, 64)))  # fmt: skip


def test_rope_outputs_over_inputs_they_still_read_are_refused():
    x = _x(3, 5, 64)
    cos, sin = _tables("cpu", width=32)
    with pytest.raises(RuntimeError, match="out must not overlap x"):  # a head to the right: read after written
        torch.ops.sgl_npu_norm.head_norm_rope(x[:, :4], None, None, 0.0, False, False, None, cos, sin, None, 32, True,
                                              True, x[:, 1:])  # fmt: skip
    query, key = _x(3, 1, 64), _x(3, 1, 64)
    with pytest.raises(RuntimeError, match="x2: key, out2: k_out.: .*out must not overlap x2"):
        ops.fused_rope_qk_mqa(query, key, _x(3, 64), 64, out=(key, torch.empty_like(key)))
    row = _x(3, 192)
    with pytest.raises(RuntimeError, match="out2: key.: .*out must not overlap out2"):
        ops.apply_rope_with_cos_sin_cache_inplace(torch.tensor([0, 1, 2]), row[:, :128], row[:, 64:128], 64, _x(8, 64))


def _bad_mqa_out():
    query = _x(3, 1, 64)
    return ops.fused_rope_qk_mqa(query, query.clone(), _x(3, 64), 64, out=(1, 2))


NAMING_CASES = {  # inputs whose indexing or C++ conversion used to fail with messages naming no argument
    "None weight": (lambda: ops.rmsnorm(_x(4, 64), None), RuntimeError, "weight must be a tensor, got None"),
    "None residual": (lambda: ops.fused_add_rmsnorm(_x(4, 64), None, _x(64)), RuntimeError, "residual must be a"),
    "list x": (lambda: ops.silu_and_mul([1.0, 2.0]), TypeError, "x must be a torch.Tensor, got list"),
    "0-dim x": (lambda: ops.swiglu_quant(torch.tensor(1.0)), RuntimeError, "x must have at least 1 dim"),
    "quant out of 3": (lambda: ops.swiglu_quant(_x(4, 64), out=(1, 2, 3)), RuntimeError, "out must be a .q, scale."),
    "0-dim sin": (
        lambda: ops.split_qkv_rmsnorm_rope(_qkv("cpu"), torch.tensor(1.0), torch.tensor(1.0), 256, 128, 64),
        RuntimeError,
        "sin must have at least 1 dim",
    ),
    "1-D mqa cos_sin": (
        lambda: ops.fused_rope_qk_mqa(_x(3, 1, 64), _x(3, 1, 64), _x(64), 64),
        RuntimeError,
        "cos_sin must be .tokens",
    ),
    "int in mqa out": (_bad_mqa_out, TypeError, "out q_out must be a torch.Tensor, got int"),
    "negative lora rank": (
        lambda: ops.fused_split_qk_norm(_x(3, 100), _x(64), _x(32), -4, 32, 16, 1e-6),
        RuntimeError,
        "q_lora_rank and kv_lora_rank must be > 0",
    ),
    "TP without eps": (
        lambda: ops.split_qkv_tp_rmsnorm_rope(_qkv("cpu"), *_tables("cpu"), 256, 128, 64, None, _x(256), _x(128), 64),
        RuntimeError,
        "eps must be given",
    ),
    "0-dim cache": (
        lambda: ops.apply_rope_with_cos_sin_cache_inplace(torch.tensor([0]), _x(1, 64), _x(1, 64), 64, _x()),
        RuntimeError,
        "cos_sin_cache must have at least 1 dim",
    ),
}


@pytest.mark.parametrize("case", list(NAMING_CASES))
def test_malformed_arguments_are_named(case):
    fn, error, needle = NAMING_CASES[case]
    with pytest.raises(error, match=needle):
        fn()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_a_second_head_group_must_match_the_first(device):
    q, k = _x(3, 2, 64, device=device), _x(3, 1, 64, device=device)
    cos, sin = _tables(device, width=32)
    args = (None, None, 0.0, False, False, None, cos, sin, None, 32, True, True)
    N = torch.ops.sgl_npu_norm
    cases = {
        "x2 needs out2": (q, torch.empty_like(q), k, None),
        "x2 must have x's 3 tokens": (q, torch.empty_like(q), k[:2], torch.empty_like(k[:2])),
        "out2 must .*bfloat16": (q, torch.empty_like(q), k.float(), torch.empty_like(k.float())),
    }
    for needle, (x, out, x2, out2) in cases.items():
        with pytest.raises(RuntimeError, match=needle):
            N.head_norm_rope(x, *args, out, x2, out2)


def test_written_tensors_holding_a_parameter_are_refused():
    # rows written early would change the weight (or scale) the later rows read; no memory to compare on meta
    rows, x = _x(4, 64), _x(4, 64)
    with pytest.raises(RuntimeError, match="out must not overlap weight"):
        ops.rmsnorm(x, rows[3], out=rows)
    with pytest.raises(RuntimeError, match="added must not overlap bias"):
        ops.add_rmsnorm_bias(x, _x(4, 64), _x(64), rows[2], out=(_x(4, 64), rows))
    codes = torch.empty(4 * 64, dtype=torch.int8)
    with pytest.raises(RuntimeError, match="out must not overlap quant_scale"):
        ops.rmsnorm_bias(x, _x(64), None, 1e-6, codes.view(torch.float32), out=codes.view(4, 64))
    with pytest.raises(RuntimeError, match="residual must not overlap weight"):
        ops.fused_add_rmsnorm(x, rows, rows[2])
    from sgl_npu_norm import _meta  # the fakes' and device paths' checks, on the same tensors

    with pytest.raises(RuntimeError, match="out must not overlap weight"):
        _meta.check_norm(x, rows[3], None, 1e-6, None, None, rows)
    with pytest.raises(RuntimeError, match="residual must not overlap weight"):
        _meta.check_norm(x, rows[2], None, 1e-6, None, None, x, rows)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_outputs_that_overlap_themselves_are_refused(device):
    # an expand()ed output would be written by several threads at once: garbage, where torch's own ops raise
    bf = torch.bfloat16
    q, k = torch.randn(4, 2, 64, dtype=bf, device=device), torch.randn(4, 1, 64, dtype=bf, device=device)
    cos_sin = torch.randn(4, 64, dtype=bf, device=device)
    k_out = torch.empty(4, 1, 64, dtype=bf, device=device)
    for q_out in (torch.empty(1, 2, 64, dtype=bf, device=device).expand(4, 2, 64),  # tokens on one row
                  torch.empty(4, 1, 64, dtype=bf, device=device).expand(4, 2, 64)):  # heads on one head  # fmt: skip
        with pytest.raises(RuntimeError, match="must not overlap itself"):
            ops.fused_rope_qk_mqa(q, k, cos_sin, 64, out=(q_out, k_out))
    qkv, sin, cos = (
        torch.randn(4, 256, device=device),
        torch.randn(4, 64, device=device),
        torch.randn(4, 64, device=device),
    )
    outs = (
        torch.empty(1, 128, device=device).expand(4, 128),
        torch.empty(4, 64, device=device),
        torch.empty(4, 64, device=device),
    )
    with pytest.raises(RuntimeError, match="must not overlap itself"):
        ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 128, 64, 64, out=outs)
    query = torch.randn(1, 128, device=device).expand(4, 128)
    key, cache = torch.randn(4, 64, device=device), torch.randn(20, 64, device=device)
    with pytest.raises(RuntimeError, match="must not overlap itself"):
        ops.apply_rope_with_cos_sin_cache_inplace(
            torch.zeros(4, dtype=torch.long, device=device), query, key, 64, cache
        )


def test_outputs_of_any_stride_order_are_taken():
    # tokens need not be the outer dim: [T, H, D] views of [H, T, D] tensors are distinct memory
    query = torch.randn(3, 5, 64, dtype=torch.bfloat16).transpose(0, 1)  # [5 tokens, 3 heads, 64]
    q_out = torch.empty(3, 5, 64, dtype=torch.bfloat16).transpose(0, 1)
    key, cos_sin = torch.randn(5, 1, 64, dtype=torch.bfloat16), torch.randn(5, 64, dtype=torch.bfloat16)
    got = ops.fused_rope_qk_mqa(query, key, cos_sin, 64, out=(q_out, torch.empty(5, 1, 64, dtype=torch.bfloat16)))
    assert got[0] is q_out
    assert torch.equal(q_out, ops.fused_rope_qk_mqa(query.contiguous(), key, cos_sin, 64)[0])


def test_the_checks_the_fakes_and_device_paths_share_match_the_cpu_ops():
    # meta tensors run the Python checks (fake impls; the Triton launchers call the same ones)
    def meta(*shape, dtype=torch.bfloat16):
        return torch.empty(*shape, dtype=dtype, device="meta")

    x = meta(4, 64)
    with pytest.raises(RuntimeError, match="weight must be contiguous"):
        ops.rmsnorm(x, meta(1).expand(64))
    heads = meta(4, 2, 64)
    cos, sin = meta(8, 128)[:, :32], meta(8, 32)  # equal widths, different row strides
    with pytest.raises(RuntimeError, match="row stride of cos"):
        torch.ops.sgl_npu_norm.head_norm_rope(heads, None, None, 0.0, False, False, None, cos, sin,
                                              torch.zeros(4, dtype=torch.long, device="meta"), 64, True, False,
                                              meta(4, 2, 64))  # fmt: skip
    positions = torch.zeros(4, 2, dtype=torch.long, device="meta")[:, 0]
    with pytest.raises(RuntimeError, match="positions must be contiguous"):
        torch.ops.sgl_npu_norm.head_norm_rope(heads, None, None, 0.0, False, False, None, cos.contiguous(),
                                              sin, positions, 64, True, False, meta(4, 2, 64))  # fmt: skip
    with pytest.raises(RuntimeError, match="out must not overlap itself"):
        torch.ops.sgl_npu_norm.head_norm_rope(heads, None, None, 0.0, False, False, None, None, None, None, 0, True,
                                              False, meta(1, 2, 64).expand(4, 2, 64))  # fmt: skip


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("norm,rstd", [(True, True), (False, False)], ids=["with rstd", "without norm"])
def test_whole_width_needs_a_norm_and_no_given_rstd(device, norm, rstd):
    qkv = _x(3, 4 * 32, device=device)
    outs = [_x(3, n, device=device) for n in (64, 32, 32)]
    given = torch.rand(3, 2, device=device) + 0.5 if rstd else None
    with pytest.raises(RuntimeError, match="whole_width needs norm=True and no rstd"):
        args = (qkv, 32, 2, 1, False, None, None, None, None, 1e-6, False, norm, given, True)
        torch.ops.sgl_npu_norm.split_qkv_norm_rope(*args, None, None, None, 0, True, True, *outs, None)
