"""Triton kernels (sgl_npu_norm.triton) against reference.py, run on CPU tensors through the Triton interpreter.

On a GPU machine, ``SGL_NPU_TEST_DEVICE=cuda TRITON_INTERPRET=0 pytest tests/test_triton.py`` runs the same
tests natively on cuda tensors, plus a serving-size shape.
"""

import os

# The interpreter must be chosen before triton is imported (conftest.py does the same).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from sgl_npu_core.pytest_plugin import TEST_DEVICE  # noqa: E402
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close, assert_codes_close  # noqa: E402
from sgl_npu_norm import reference as ref  # noqa: E402

pytest.importorskip("triton")
from sgl_npu_norm import triton as kernels  # noqa: E402

# Small shapes for the interpreter; a real device also gets DeepSeek's hidden size at a batch of 512 tokens.
BIG = [] if TEST_DEVICE == "cpu" else [(512, 7168)]
SHAPES = [(1, 8), (3, 100), (2, 3, 256), *BIG]
GLU_SHAPES = [(1, 16), (3, 200), (2, 3, 512), *[(r, 2 * h) for r, h in BIG]]  # gated inputs [..., 2d]

pytestmark = pytest.mark.usefixtures("on_test_device")


def _other_dtype(dtype):
    # per-channel params of another float dtype than x: the kernels cast them to fp32
    return FLOAT_DTYPES[(FLOAT_DTYPES.index(dtype) + 1) % len(FLOAT_DTYPES)]


def _norm_params(hidden, dtype, bias, quant):
    """(bias, quant_scale, quant_offset) for quant in (None, "scale", "offset")."""
    b = torch.randn(hidden, dtype=dtype) if bias else None
    qs = torch.rand(hidden, dtype=dtype) * 40 + 10 if quant else None  # wide enough to saturate both ends
    qo = (torch.randn(hidden) * 3).to(dtype) if quant == "offset" else None
    return b, qs, qo


def _check_norm_out(out, want):
    if want.dtype == torch.int8:
        assert_codes_close(out, want)
    else:
        assert_close(out, want)


def _norm_variants(fn):
    """Every dtype and shape x plain/Gemma x bias or not x no quant / scale / scale + offset."""
    for name, values, ids in [
        ("quant", [None, "scale", "offset"], None),
        ("bias", [False, True], ["nobias", "bias"]),
        ("gemma", [False, True], ["plain", "gemma"]),
        ("shape", SHAPES, str),
        ("dtype", FLOAT_DTYPES, str),
    ]:
        fn = pytest.mark.parametrize(name, values, ids=ids)(fn)
    return fn


@_norm_variants
def test_rmsnorm(shape, dtype, gemma, bias, quant):
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[-1], dtype=dtype)
    b, qs, qo = _norm_params(shape[-1], dtype, bias, quant)
    out = torch.empty(shape, dtype=torch.int8 if quant else dtype)
    assert kernels.rmsnorm(x, w, b, 1e-5, gemma, qs, qo, out) is None
    _check_norm_out(out, ref.rmsnorm(x, w, 1e-5, bias=b, gemma=gemma, quant_scale=qs, quant_offset=qo))


@_norm_variants
def test_add_rmsnorm(shape, dtype, gemma, bias, quant):
    pdtype = _other_dtype(dtype)
    x, residual = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[-1], dtype=pdtype)
    b, qs, qo = _norm_params(shape[-1], pdtype, bias, quant)
    out = torch.empty(shape, dtype=torch.int8 if quant else dtype)
    added = torch.empty_like(x)
    kernels.add_rmsnorm(x, residual, w, b, 1e-6, gemma, qs, qo, out, added)
    want_out, want_added = ref.add_rmsnorm_bias(x, residual, w, b, 1e-6, qs, qo, gemma=gemma)
    assert_close(added, want_added, atol=0, rtol=0, name="added")  # the sum is rounded to the dtype
    _check_norm_out(out, want_out)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("gemma", [False, True], ids=["plain", "gemma"])
def test_fused_add_rmsnorm_in_place(shape, dtype, gemma):
    x, residual = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[-1], dtype=dtype)
    want_x, want_residual = ref.fused_add_rmsnorm(x, residual, w, gemma=gemma)
    assert kernels.fused_add_rmsnorm(x, residual, w, 1e-6, gemma) is None
    assert_close(residual, want_residual, atol=0, rtol=0, name="residual")
    assert_close(x, want_x)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_norm_strided_rows(dtype):
    # rows 300 elements apart behind size-1 leading dims, written into a strided `out` and `added`
    x = torch.randn(2, 1, 3, 300, dtype=dtype)[..., 22:278]
    residual = torch.randn(6, 260, dtype=dtype)[:, :256].reshape(2, 1, 3, 256)
    w = torch.randn(256)
    out_base = torch.full((2, 1, 3, 270), 7.0, dtype=dtype)
    added_base = torch.full((6, 280), 7.0, dtype=dtype)
    out, added = out_base[..., 5:261], added_base[:, 3:259].view(2, 1, 3, 256)
    kernels.add_rmsnorm(x, residual, w, None, 1e-6, False, None, None, out, added)
    want_out, want_added = ref.add_rmsnorm_bias(x, residual, w)
    assert_close(out, want_out)
    assert_close(added, want_added, atol=0, rtol=0, name="added")
    assert (out_base[..., :5] == 7).all() and (out_base[..., 261:] == 7).all() and (added_base[:, 259:] == 7).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLU_SHAPES, ids=str)
def test_silu_and_mul(shape, dtype):
    x = torch.randn(shape, dtype=dtype) * 4
    out = torch.empty((*shape[:-1], shape[-1] // 2), dtype=dtype)
    assert kernels.silu_and_mul(x, out) is None
    assert_close(out, ref.silu_and_mul(x))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLU_SHAPES, ids=str)
@pytest.mark.parametrize("alpha,limit", [(1.702, 7.0), (1.0, 2.5)])
def test_swiglu_oai(shape, dtype, alpha, limit):
    x = torch.randn(shape, dtype=dtype) * 5  # beyond the limit on both sides
    out = torch.empty((*shape[:-1], shape[-1] // 2), dtype=dtype)
    kernels.swiglu_oai(x, alpha, limit, out)
    assert_close(out, ref.swiglu_oai(x, alpha, limit))


def _run_swiglu_quant(x, group_list=None, group_list_type=1, do_limit=False, limit=7.0):
    # outputs prefilled with garbage: every element must be written, padding rows included
    q = torch.full((*x.shape[:-1], x.shape[-1] // 2), 9, dtype=torch.int8)
    scale = torch.full(x.shape[:-1], 9.0)
    assert kernels.swiglu_quant(x, group_list, group_list_type, do_limit, limit, q, scale) is None
    want_q, want_scale = ref.swiglu_quant(x, group_list, group_list_type, do_limit, limit)
    assert_close(scale, want_scale, atol=1e-7, rtol=5e-6, name="scale")
    assert_codes_close(q, want_q, name="q")
    return q, scale


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", GLU_SHAPES, ids=str)
@pytest.mark.parametrize("do_limit", [False, True])
def test_swiglu_quant(shape, dtype, do_limit):
    _run_swiglu_quant(torch.randn(shape, dtype=dtype) * 4, do_limit=do_limit, limit=3.0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nan_inputs_give_nan_as_the_reference(dtype):
    """NaN through the limits (torch.clamp keeps it) and into swiglu_quant's row scale (amax keeps it)."""
    x = torch.randn(4, 200, dtype=dtype) * 4
    x[0, 5] = x[1, 150] = x[2, 99] = float("nan")  # a gate, an up, the last up
    for oai in (False, True):
        out = torch.empty(4, 100, dtype=dtype)
        if oai:
            kernels.swiglu_oai(x, 1.702, 7.0, out)
        else:
            kernels.silu_and_mul(x, out)
        assert_close(out, ref.swiglu_oai(x) if oai else ref.silu_and_mul(x))  # NaN exactly where the reference's
    for do_limit in (False, True):
        q, scale = _run_swiglu_quant(x, do_limit=do_limit, limit=3.0)
        assert scale[:3].isnan().all() and (q[:3] == 0).all()


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("group_list_type", [0, 1])
def test_swiglu_quant_group_list(index_dtype, group_list_type):
    counts = torch.tensor([0, 3, 0, 4, 0, 2])  # 9 of 12 rows
    group_list = (counts if group_list_type == 1 else counts.cumsum(0)).to(index_dtype)
    x = torch.randn(3, 4, 96, dtype=torch.bfloat16)
    x[0, 1] = 0  # an all-zero computed row: scale 0, q 0
    q, scale = _run_swiglu_quant(x, group_list, group_list_type)
    q, scale = q.view(12, 48), scale.view(12)
    assert (q[9:] == 0).all() and (scale[9:] == 0).all()
    assert (scale[:9] > 0).sum() == 8


@pytest.mark.parametrize("widths", [(8, 8, 0), (100, 28, 28), (1024, 300, 5)], ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_split_sum_squares(dtype, widths):
    width0, width1, rest = widths
    x = torch.randn(3, width0 + width1 + rest + 2, dtype=dtype)[:, 2:]  # strided rows
    out = torch.empty(3, 2)
    kernels.split_sum_squares(x, width0, width1, out)
    assert_close(out, ref.split_sum_squares(x, width0, width1), rtol=1e-5, atol=1e-5)


def test_zero_rows():
    x = torch.empty(0, 8)
    w = torch.ones(8)
    kernels.rmsnorm(x, w, None, 1e-6, False, None, None, torch.empty(0, 8))
    kernels.add_rmsnorm(x, x, w, None, 1e-6, False, w, None, torch.empty(0, 8, dtype=torch.int8), torch.empty(0, 8))
    kernels.fused_add_rmsnorm(x, torch.empty(0, 8), w, 1e-6, True)
    kernels.silu_and_mul(x, torch.empty(0, 4))
    kernels.swiglu_oai(x, 1.702, 7.0, torch.empty(0, 4))
    kernels.swiglu_quant(x, torch.zeros(1, dtype=torch.int32), 1, False, 7.0, torch.empty(0, 4, dtype=torch.int8),
                         torch.empty(0))  # fmt: skip
    kernels.split_sum_squares(x, 4, 4, torch.empty(0, 2))


BF16 = torch.bfloat16
MALFORMED = {
    "weight size": (lambda: kernels.rmsnorm(torch.randn(4, 64), torch.randn(63), None, 1e-6, False, None, None,
                                            torch.empty(4, 64)), "weight"),
    "bias size": (lambda: kernels.rmsnorm(torch.randn(4, 64), torch.randn(64), torch.randn(65), 1e-6, False, None, None,
                                          torch.empty(4, 64)), "bias"),
    "quant out dtype": (lambda: kernels.rmsnorm(torch.randn(4, 64), torch.randn(64), None, 1e-6, False,
                                                torch.ones(64), None, torch.empty(4, 64)), "out"),
    "negative eps": (lambda: kernels.rmsnorm(torch.randn(4, 64), torch.randn(64), None, -1.0, False, None, None,
                                             torch.empty(4, 64)), "eps"),
    "uncollapsible rows": (lambda: kernels.rmsnorm(torch.randn(4, 6, 64)[:, :3], torch.randn(64), None, 1e-6, False,
                                                   None, None, torch.empty(4, 3, 64)), "x has leading dims"),
    "residual dtype": (lambda: kernels.fused_add_rmsnorm(torch.randn(4, 64, dtype=BF16), torch.randn(4, 64),
                                                         torch.randn(64), 1e-6, False), "residual"),
    "odd gated width": (lambda: kernels.silu_and_mul(torch.randn(4, 63), torch.empty(4, 31)), "even"),
    "oai limit": (lambda: kernels.swiglu_oai(torch.randn(4, 64), 1.702, 0.0, torch.empty(4, 32)), "limit"),
    "group_list dtype": (lambda: kernels.swiglu_quant(torch.randn(4, 64), torch.ones(2), 1, False, 7.0,
                                                      torch.empty(4, 32, dtype=torch.int8), torch.empty(4)),
                         "group_list"),
    "scale dtype": (lambda: kernels.swiglu_quant(torch.randn(4, 64), None, 1, False, 7.0,
                                                 torch.empty(4, 32, dtype=torch.int8), torch.empty(4, dtype=BF16)),
                    "scale"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_names_the_argument(case):
    fn, needle = MALFORMED[case]
    with pytest.raises(RuntimeError, match=needle):
        fn()


# head_norm_rope: (norm, weight layout, rstd given) x (rope: none / NeoX full / NeoX half / GPT-J) x positions
HNR_NORM = {
    "none": {},
    "norm": {"norm": True, "weight": "head", "bias": True},
    "gemma": {"norm": True, "weight": "head", "gemma": True},
    "rstd": {"norm": True, "weight": "all", "rstd": True},
}
HNR_ROPE = {
    "none": (0, True, False),
    "neox": (16, True, True),
    "neox-half": (8, True, False),
    "gptj": (16, False, False),
}


@pytest.mark.parametrize("positions", [False, True], ids=["rows", "positions"])
@pytest.mark.parametrize("rope", list(HNR_ROPE))
@pytest.mark.parametrize("norm", list(HNR_NORM))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_head_norm_rope(dtype, norm, rope, positions):
    tokens, heads, width = 3, 2, 24  # not a power of two: masked lanes
    base = torch.randn(tokens, heads, 2 * width, dtype=dtype)
    x = base[..., :width]  # heads 2 * width apart, as the [q | gate] layout
    opt = HNR_NORM[norm]
    size = heads * width if opt.get("weight") == "all" else width
    weight = torch.randn(size, dtype=_other_dtype(dtype)) if opt.get("weight") else None
    bias = torch.randn(size) if opt.get("bias") else None
    rstd = torch.rand(tokens) + 0.5 if opt.get("rstd") else None
    rope_dim, neox, full_width = HNR_ROPE[rope]
    table_rows = 7 if positions else tokens
    cos, sin = torch.randn(table_rows, 20), torch.randn(table_rows, 20)
    pos = torch.tensor([6, 0, 3]) if positions else None
    args = (weight, bias, 1e-6, opt.get("gemma", False), opt.get("norm", False), rstd, cos, sin, pos, rope_dim, neox,
            full_width)  # fmt: skip
    out = torch.full((tokens, heads, width), 9.0, dtype=dtype)
    assert kernels.head_norm_rope(x, *args, out) is None
    assert_close(out, ref.head_norm_rope(x, *args))


# (tokens, heads) per program: (1, 1), (2, 2 then 1), (all 5 and 3 masked, 3)
@pytest.mark.parametrize("tile_elements,min_programs", [(32, 1024), (64, 4), (4096, 1)])
def test_head_norm_rope_token_tiles(monkeypatch, tile_elements, min_programs):
    monkeypatch.setattr(kernels.rope, "TILE_ELEMENTS", tile_elements)
    monkeypatch.setattr(kernels.rope, "MIN_PROGRAMS", min_programs)
    x = torch.randn(5, 3, 32, dtype=torch.bfloat16)
    weight, cos, sin = torch.randn(32), torch.randn(9, 16), torch.randn(9, 16)
    args = (weight, None, 1e-6, False, True, None, cos, sin, torch.tensor([8, 1, 0, 4, 2]), 16, True, False)
    out = torch.empty_like(x)
    kernels.head_norm_rope(x, *args, out)
    assert_close(out, ref.head_norm_rope(x, *args))


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
def test_head_norm_rope_in_place(neox):
    x = torch.randn(4, 3, 32, dtype=torch.bfloat16)
    cos, sin = torch.randn(4, 16), torch.randn(4, 16)
    want = ref.head_norm_rope(x, None, None, 0.0, False, False, None, cos, sin, None, 16, neox, False)
    kernels.head_norm_rope(None, None, None, 0.0, False, False, None, cos, sin, None, 16, neox, False, x)
    assert_close(x, want)


@pytest.mark.parametrize(
    "gate,rstd,whole,positions",
    [(False, False, False, False), (True, False, False, True), (False, True, False, False), (True, False, True, False),
     (False, False, True, False)],
)  # fmt: skip
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_split_qkv_norm_rope_through_triton(dtype, gate, rstd, whole, positions):
    """The device path of the fused op (Triton head_norm_rope on q and k views, v and gate copied; a whole-width
    norm without gates from Triton split_sum_squares) against the reference composition of the same primitives."""
    from sgl_npu_norm import _accelerator

    tokens, head, q_heads, kv_heads = 3, 32, 2, 1
    qkv = torch.randn(tokens, q_heads * head * (2 if gate else 1) + 2 * kv_heads * head, dtype=dtype)
    across = rstd or whole  # weights may span a group's heads
    size = (q_heads if across else 1) * head
    args = (qkv, head, q_heads, kv_heads, gate, torch.randn(size), torch.randn(kv_heads * head if across else head),
            None, None, 1e-6, False, True, torch.rand(tokens, 2) + 0.5 if rstd else None, whole,
            torch.randn(9, 32), torch.randn(9, 32), torch.tensor([8, 1, 4]) if positions else None, 16, True,
            not positions)  # fmt: skip

    def outputs():
        widths = [q_heads * head, kv_heads * head, kv_heads * head]
        outs = [torch.full((tokens, w), 5.0, dtype=dtype) for w in widths]
        return (*outs, torch.full((tokens, q_heads * head), 5.0, dtype=dtype) if gate else None)

    got, want = outputs(), outputs()
    _accelerator._split_qkv_norm_rope_with(kernels.launch_head_norm_rope, kernels.split_sum_squares)(*args, *got)
    reference_path = (_accelerator._run_ref_head_norm_rope, _accelerator._ref_split_sum_squares)
    _accelerator._split_qkv_norm_rope_with(*reference_path)(*args, *want)
    for g, w in zip(got, want, strict=True):
        if w is not None:
            assert_close(g, w)


def test_reference_fallback_checks_positions():
    """The device path without Triton (the reference) raises on positions outside the cache, as the CPU op does."""
    from sgl_npu_norm import _accelerator

    x, out = torch.randn(2, 1, 16), torch.full((2, 1, 16), 5.0)
    cos, sin = torch.randn(4, 8), torch.randn(4, 8)
    args = (None, None, 0.0, False, False, None, cos, sin)
    _accelerator._ref_head_norm_rope(x, *args, torch.tensor([3, 0]), 16, True, False, out)
    assert_close(out, ref.head_norm_rope(x, *args, torch.tensor([3, 0]), 16, True, False))
    with pytest.raises(RuntimeError, match="positions"):
        _accelerator._ref_head_norm_rope(x, *args, torch.tensor([4, 0]), 16, True, False, out)


@pytest.mark.parametrize("in_place", [False, True])
def test_head_norm_rope_two_groups(in_place):
    """The op's second head group (x2 into out2, the other arguments shared) against the reference per group."""
    q, k = torch.randn(4, 3, 32, dtype=torch.bfloat16), torch.randn(4, 1, 32, dtype=torch.bfloat16)
    cos, sin = torch.randn(4, 16), torch.randn(4, 16)
    args = (None, None, 0.0, False, False, None, cos, sin, None, 16, True, False)
    want = [ref.head_norm_rope(t, *args) for t in (q, k)]
    if in_place:
        got = [q.clone(), k.clone()]
        kernels.head_norm_rope(None, *args, got[0], None, got[1])
    else:
        got = [torch.empty_like(q), torch.empty_like(k)]
        kernels.head_norm_rope(q, *args, got[0], k, got[1])
    for g, w in zip(got, want, strict=True):
        assert_close(g, w)
