"""Split-QKV + QK-norm + RoPE ops (CPU kernels; with SGL_NPU_TEST_DEVICE=cuda the Triton path) against
reference.py: both RoPE styles, partial rotation, norm with and without bias, every dtype; q/k within the dtype's
tolerance, v (and gate) bit-exact."""

import pytest
import sgl_npu_norm as ops
import torch
from sgl_npu_core.testing import FLOAT_DTYPES, assert_close, empty_at
from sgl_npu_norm import _meta
from sgl_npu_norm import reference as ref

pytestmark = pytest.mark.usefixtures("on_test_device")


def _angles(tokens, half):
    return torch.rand(tokens, half) * 6.3 - 3.1


def _full_tables(tokens, rope_dim, dtype=torch.float32):
    """NeoX-style full-width cos/sin [T, rope_dim] (each half repeated)."""
    a = _angles(tokens, rope_dim // 2)
    return torch.cat([a.cos(), a.cos()], -1).to(dtype), torch.cat([a.sin(), a.sin()], -1).to(dtype)


def _cache(rows, rope_dim, dtype=torch.float32):
    a = _angles(rows, rope_dim // 2)
    return torch.cat([a.cos(), a.sin()], -1).to(dtype)


def _check_all(got, want, exact=()):
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if i in exact:
            assert torch.equal(g, w), f"output {i} must be bit-exact"
        else:
            assert_close(g, w, name=f"output {i}")


NORM = {"none": {}, "norm": {"eps": 1e-6}, "norm+bias": {"eps": 1e-5, "bias": True}}


def _norm_kwargs(mode, head_dim, dtype):
    kw = dict(NORM[mode])
    if "eps" in kw:
        kw["q_weight"], kw["k_weight"] = torch.randn(head_dim, dtype=dtype), torch.randn(head_dim, dtype=dtype)
    if kw.pop("bias", False):
        kw["q_bias"], kw["k_bias"] = torch.randn(head_dim, dtype=dtype), torch.randn(head_dim, dtype=dtype)
    return kw


@pytest.mark.parametrize("norm", list(NORM))
@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rope_frac", [1, 2, 4], ids=["rope=hd", "rope=hd/2", "rope=hd/4"])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_split_qkv_rmsnorm_rope(dtype, head_dim, rope_frac, neox, norm):
    tokens, q_hidden, kv_hidden = 3, 4 * head_dim, 2 * head_dim
    qkv = torch.randn(tokens, q_hidden + 2 * kv_hidden, dtype=dtype) * 2
    cos, sin = _full_tables(tokens, head_dim // rope_frac, dtype)
    kw = _norm_kwargs(norm, head_dim, dtype)
    got = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, q_hidden, kv_hidden, head_dim, is_neox_style=neox, **kw)
    want = ref.split_qkv_rmsnorm_rope(qkv, sin, cos, q_hidden, kv_hidden, head_dim, is_neox_style=neox, **kw)
    _check_all(got, want, exact=(2,))


def test_neox_uses_both_halves_of_full_width_tables():
    # cos/sin whose halves differ: NeoX reads the second half for the second half of the head
    qkv = torch.randn(2, 3 * 64)
    cos, sin = torch.randn(2, 64), torch.randn(2, 64)
    got = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 64, 64, 64)
    _check_all(got, ref.split_qkv_rmsnorm_rope(qkv, sin, cos, 64, 64, 64), exact=(2,))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_full_width_tables_whose_halves_repeat_on_some_tokens_only(dtype):
    # The kernels take one half's tables for both where a token's halves repeat: each token decides for itself,
    # and a difference anywhere in the second half (here only in its last 16 values) counts.
    tokens, head = 5, 128
    qkv = torch.randn(tokens, 6 * head, dtype=dtype)
    cos, sin = _full_tables(tokens, head, dtype)
    cos[1, -16:] = torch.rand(16, dtype=dtype)
    sin[2, -16:] = torch.rand(16, dtype=dtype) - 2
    kw = _norm_kwargs("norm", head, dtype)
    got = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 4 * head, head, head, **kw)
    _check_all(got, ref.split_qkv_rmsnorm_rope(qkv, sin, cos, 4 * head, head, head, **kw), exact=(2,))


@pytest.mark.parametrize("norm", ["norm", "norm+bias"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_odd_head_counts(dtype, norm):
    # Wholly rotated heads go two at a time where the kernel can: an odd count leaves one for the single-head path.
    tokens, head = 3, 128
    qkv = torch.randn(tokens, 5 * head, dtype=dtype)
    cos, sin = _full_tables(tokens, head, dtype)
    kw = _norm_kwargs(norm, head, dtype)
    got = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 3 * head, head, head, **kw)
    _check_all(got, ref.split_qkv_rmsnorm_rope(qkv, sin, cos, 3 * head, head, head, **kw), exact=(2,))


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rope_dim", [128, 64, 32])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_pos_cache(dtype, index_dtype, rope_dim, neox):
    tokens, head_dim = 4, 128
    qkv = torch.randn(tokens, 4 * head_dim, dtype=dtype)
    cache = _cache(50, 128)  # rope_dim < 128: the first rope_dim columns are [cos half | sin half]
    positions = torch.tensor([49, 0, 7, 7], dtype=index_dtype)
    kw = _norm_kwargs("norm+bias", head_dim, dtype)
    args = (qkv, positions, cache, 2 * head_dim, head_dim, head_dim)
    got = ops.split_qkv_rmsnorm_rope_pos_cache(*args, rope_dim=rope_dim, is_neox_style=neox, **kw)
    want = ref.split_qkv_rmsnorm_rope_pos_cache(*args, rope_dim=rope_dim, is_neox_style=neox, **kw)
    _check_all(got, want, exact=(2,))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_qkvgate_gemma(dtype):
    # Qwen3-Next: q 512, kv 256, head 256, a quarter of each head rotated; 37 tokens span three of the CPU op's
    # blocks of 16 (the last one short)
    tokens, q_hidden, kv_hidden, head_dim, rope_dim = 37, 512, 256, 256, 64
    qkv = torch.randn(tokens, 2 * q_hidden + 2 * kv_hidden, dtype=dtype)
    cos, sin = _full_tables(tokens, rope_dim, dtype)
    qw, kw = torch.randn(head_dim, dtype=dtype) * 0.1, torch.randn(head_dim, dtype=dtype) * 0.1
    args = (qkv, sin, cos, q_hidden, kv_hidden, head_dim, rope_dim, 1e-6, qw, kw)
    got = ops.split_qkvgate_gemma_rmsnorm_rope(*args)
    _check_all(got, ref.split_qkvgate_gemma_rmsnorm_rope(*args), exact=(2, 3))


@pytest.mark.parametrize("shift", [0, 8, 1], ids=["aligned", "16-byte", "offset"])
def test_qkvgate_outputs_over_the_streaming_threshold(shift):
    # qkv of 8 MB and more: the q pass asks for whole rows a token ahead, across the op's blocks of 16 tokens, and
    # 8 MB outputs are written around the caches (v and gate copies too), where 16-byte aligned ("16-byte": out=
    # views 8 elements in; "offset": one element in, so every output takes the plain stores, and the heads the
    # 32-wide path): the same values as the reference.
    tokens, q_hidden, kv_hidden, head_dim, rope_dim = 1030, 4096, 4096, 128, 64
    qkv = torch.randn(tokens, 2 * q_hidden + 2 * kv_hidden, dtype=torch.bfloat16)
    cos, sin = _full_tables(tokens, rope_dim, torch.bfloat16)
    qw, kw = torch.randn(head_dim, dtype=torch.bfloat16) * 0.1, torch.randn(head_dim, dtype=torch.bfloat16) * 0.1
    args = (qkv, sin, cos, q_hidden, kv_hidden, head_dim, rope_dim, 1e-6, qw, kw)
    out = tuple(empty_at((tokens, w), qkv.dtype, 2 * shift) for w in (q_hidden, kv_hidden, kv_hidden, q_hidden))
    got = ops.split_qkvgate_gemma_rmsnorm_rope(*args, out=out)
    _check_all(got, ref.split_qkvgate_gemma_rmsnorm_rope(*args), exact=(2, 3))


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("shift", [0, 8], ids=["aligned", "16-byte"])
def test_split_outputs_over_the_streaming_threshold(shift, neox):
    # Qwen3-8B's heads over 8 MB of q: the 32-wide path with streamed stores, whole 64-byte lines where aligned so
    # (16 bytes at a time at "16-byte"), for the q heads and the k heads alike.
    tokens, q_hidden, kv_hidden, head_dim = 1030, 4096, 1024, 128
    qkv = torch.randn(tokens, q_hidden + 2 * kv_hidden, dtype=torch.bfloat16)
    cos, sin = _full_tables(tokens, head_dim, torch.bfloat16)
    qw, kw = torch.randn(head_dim, dtype=torch.bfloat16), torch.randn(head_dim, dtype=torch.bfloat16)
    args = (qkv, sin, cos, q_hidden, kv_hidden, head_dim, 1e-6, qw, kw)
    out = tuple(empty_at((tokens, w), qkv.dtype, 2 * shift) for w in (q_hidden, kv_hidden, kv_hidden))
    got = ops.split_qkv_rmsnorm_rope(*args, is_neox_style=neox, out=out)
    _check_all(got, ref.split_qkv_rmsnorm_rope(*args, is_neox_style=neox), exact=(2,))


@pytest.mark.parametrize(
    "tokens,rope_dim,section,interleaved,gate,bias",
    [(7, 256, [32, 48, 48], True, True, False), (65, 128, [24, 20, 20], False, False, True),
     (5, 128, [16, 24, 24], True, False, True), (3, 64, [16, 8, 8], False, True, False)],
)  # fmt: skip
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_mrope(dtype, tokens, rope_dim, section, interleaved, gate, bias):
    head, nq, nkv = 256, 2, 1
    qkv = torch.randn(tokens, nq * head * (2 if gate else 1) + 2 * nkv * head, dtype=dtype)
    cos_sin = torch.stack([_cache(tokens, rope_dim) for _ in range(3)])
    qw, kw = torch.randn(head, dtype=dtype), torch.randn(head, dtype=dtype)
    qb, kb = (torch.randn(head, dtype=dtype), torch.randn(head, dtype=dtype)) if bias else (None, None)
    args = (qkv, qw, kw, cos_sin, nq, nkv, head, 1e-6, section, interleaved)
    kwargs = dict(q_bias=qb, k_bias=kb, has_gate=gate)
    got = ops.split_qkv_rmsnorm_mrope(*args, **kwargs)
    want = ref.split_qkv_rmsnorm_mrope(*args, **kwargs)
    assert (got[3] is None) == (not gate)
    _check_all(got[:3], want[:3], exact=(2,))
    if gate:
        assert torch.equal(got[3], want[3])


@pytest.mark.parametrize(
    "section,interleaved,width",
    [([24, 20, 20], True, 128), ([24, 20, 20], False, 128), ([4, 8, 0], True, 24), ([4, 0, 8], True, 24),
     ([0, 12, 0], True, 24), ([0, 0, 12], False, 24), ([2, 5, 1], True, 32), ([3, 1, 4], False, 20)],
)  # fmt: skip
@pytest.mark.parametrize("tokens", [1, 70])
def test_mrope_tables_take_each_frequency_from_its_section(section, interleaved, width, tokens):
    """The op's strided-slice tables equal a gather of each frequency's own axis (cos_sin may be wider)."""
    from sgl_npu_norm.rope import _mrope_tables

    rope_dim = 2 * sum(section)
    cos_sin = torch.randn(3, width, tokens).transpose(1, 2)  # any strides
    axes = ref.mrope_axes(section, interleaved, rope_dim // 2)
    for table, first in zip(_mrope_tables(cos_sin, section, interleaved, rope_dim), (0, rope_dim // 2), strict=True):
        want = torch.stack([cos_sin[a, :, first + i] for i, a in enumerate(axes)], dim=-1)
        assert table.stride(-1) == 1 and torch.equal(table, want)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("section,interleaved", [([24, 20, 20], True), ([3, 1, 4], False), ([0, 0, 12], True)])
def test_mrope_tables_op_and_its_device_path_agree(dtype, section, interleaved):
    # the device path builds the tables with torch calls: run here on CPU tensors against the C++ op
    from sgl_npu_norm import _accelerator

    rope_dim, tokens = 2 * sum(section), 37
    cos_sin = torch.randn(3, tokens, rope_dim + 6, dtype=dtype)[..., 3 : 3 + rope_dim]
    want, got = (torch.full((tokens, rope_dim), 7.0, dtype=dtype) for _ in range(2))
    torch.ops.sgl_npu_norm.mrope_tables(cos_sin, *section, interleaved, want)
    _accelerator._mrope_tables(cos_sin, *section, interleaved, got)
    assert torch.equal(got, want)


@pytest.mark.parametrize("device", ["cpu", "meta"])  # meta: the fake impl's checks say the same
def test_mrope_tables_op_refuses_malformed_arguments(device):
    op = torch.ops.sgl_npu_norm.mrope_tables
    cos_sin, out = torch.randn(3, 4, 32, device=device), torch.empty(4, 32, device=device)
    cases = {
        "mrope sections must be >= 0 and sum to rope_dim / 2 = 16": lambda: op(cos_sin, 8, 4, 5, True, out),
        "mrope sections must be": lambda: op(cos_sin, 20, -4, 0, False, out),
        "out must be .4, rope_dim. with rope_dim even": lambda: op(cos_sin, 8, 4, 4, True, out[:, :31].clone()),
        "cos_sin must be .3, tokens, rope_dim.": lambda: op(cos_sin[:2], 8, 4, 4, True, out),
        "out must be contiguous": lambda: op(cos_sin, 8, 4, 4, True, out.t().contiguous().t()),
        "out must have the dtype of cos_sin .float32., got float16": lambda: op(cos_sin, 8, 4, 4, True, out.half()),
        # sections whose int64 sum wraps to 16
        "sum to rope_dim / 2 = 16, got .9223372036854775807": lambda: op(cos_sin, 2**63 - 1, 2**63 - 1, 18, False, out),
    }
    if device == "cpu":  # meta tensors have no memory to overlap
        cases["out must not overlap cos_sin"] = lambda: op(cos_sin, 8, 4, 4, True, cos_sin[1])
    for needle, call in cases.items():
        with pytest.raises(RuntimeError, match=needle):
            call()


def test_mrope_axes():
    assert ref.mrope_axes([2, 1, 1], False, 4) == [0, 0, 1, 2]
    assert ref.mrope_axes([2, 2, 2], True, 6) == [0, 1, 2, 0, 1, 2]
    assert ref.mrope_axes([4, 1, 1], True, 6) == [0, 1, 2, 0, 0, 0]


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rope_dim", [64, 32])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_apply_rope_with_cos_sin_cache_inplace(dtype, rope_dim, neox):
    tokens, head = 6, 64
    query, key = torch.randn(tokens, 4 * head, dtype=dtype), torch.randn(tokens, head, dtype=dtype)
    cache = _cache(20, rope_dim)
    positions = torch.randint(0, 20, (tokens,))
    want = ref.apply_rope_with_cos_sin_cache(positions, query, key, head, cache, neox)
    assert ops.apply_rope_with_cos_sin_cache_inplace(positions, query, key, head, cache, neox) is None
    _check_all((query, key), want)


@pytest.mark.parametrize("gap", [0, 64], ids=["adjacent", "apart"])
def test_apply_rope_on_query_and_key_split_from_one_row(gap):
    # q and k split from one qkv row are rotated by one call when k's columns follow q's; v is left alone
    tokens, head = 5, 64
    qkv = torch.randn(tokens, 6 * head + gap, dtype=torch.bfloat16)
    query, key, v = qkv[:, : 4 * head], qkv[:, 4 * head + gap : 5 * head + gap], qkv[:, 5 * head + gap :]
    v_before, cache, positions = v.clone(), _cache(20, 32), torch.randint(0, 20, (tokens,))
    want = ref.apply_rope_with_cos_sin_cache(positions, query.clone(), key.clone(), head, cache, True)
    ops.apply_rope_with_cos_sin_cache_inplace(positions, query, key, head, cache, True)
    _check_all((query, key), want)
    assert torch.equal(v, v_before)


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_fused_rope_qk_mqa(dtype, neox):
    query, key = torch.randn(5, 8, 128, dtype=dtype), torch.randn(5, 1, 128, dtype=dtype)
    cos_sin = _cache(5, 96, dtype)
    got = ops.fused_rope_qk_mqa(query, key, cos_sin, 64, neox)
    _check_all(got, ref.fused_rope_qk_mqa(query, key, cos_sin, 64, neox))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_fused_split_qk_norm(dtype):
    qkv_a = torch.randn(4, 1536 + 512 + 64, dtype=dtype)
    qw, kw = torch.randn(1536, dtype=dtype), torch.randn(512, dtype=dtype)
    got = ops.fused_split_qk_norm(qkv_a, qw, kw, 1536, 512, 64, 1e-6)
    want = ref.fused_split_qk_norm(qkv_a, qw, kw, 1536, 512, 64, 1e-6)
    assert [tuple(g.shape) for g in got] == [(4, 1536), (4, 1, 512), (4, 1, 64)]
    _check_all(got, want, exact=(2,))


@pytest.mark.parametrize("head,gate,weights", [(32, False, "all"), (32, True, "head"), (24, False, "head")])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_whole_width_norm_equals_the_given_statistics(dtype, head, gate, weights):
    """The fused op's whole_width norm (its statistics over all of a token's q, and k, heads, in the pass) against
    the same op given those statistics as rstd; head 24 takes the kernel's generic path, 32 in bf16 its 16-wide
    one; 37 tokens, so threads and per-token buffers are reused."""
    from sgl_npu_norm.rope import _split_norm_rope

    tokens, q_heads, kv_heads = 37, 3, 2
    qkv = torch.randn(tokens, q_heads * head * (2 if gate else 1) + 2 * kv_heads * head, dtype=dtype)
    q_in, k_in, _, _ = _meta.qkv_views(qkv, head, q_heads, kv_heads, gate)
    rstd = torch.stack(_meta.group_rstd(q_in, k_in, None, True, 1e-6), dim=-1)
    wq, wk = (q_heads * head, kv_heads * head) if weights == "all" else (head, head)
    args = (qkv, head, q_heads, kv_heads, gate, (torch.randn(wq, dtype=dtype), torch.randn(wk, dtype=dtype)),
            (None, None), 1e-6, False)  # fmt: skip
    tables = (*_full_tables(tokens, head), None, head, True, True, None)
    got = _split_norm_rope(*args, None, *tables, whole_width=True)
    _check_all(got, _split_norm_rope(*args, rstd, *tables), exact=(2, 3))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_tp_rmsnorm_rope_single_rank(dtype):
    # no process group: the norm spans this rank's full q (and k) width
    tokens, q_hidden, kv_hidden, head = 3, 256, 128, 64
    qkv = torch.randn(tokens, q_hidden + 2 * kv_hidden, dtype=dtype)
    cos, sin = _full_tables(tokens, 32)
    qw, kw = torch.randn(q_hidden, dtype=dtype), torch.randn(kv_hidden, dtype=dtype)
    args = (qkv, cos, sin, q_hidden, kv_hidden, head, 1e-6, qw, kw, 32)
    got = ops.split_qkv_tp_rmsnorm_rope(*args)
    _check_all(got, ref.split_qkv_tp_rmsnorm_rope(*args), exact=(2,))
    # and it is a norm over the whole width: the same as rmsnorm of q, then rope
    q_norm = ref.rmsnorm(qkv[:, :q_hidden], qw, 1e-6).view(tokens, -1, head)
    assert_close(got[0], ref.norm_rope_heads(q_norm, cos, sin).flatten(1))


@pytest.mark.parametrize("head", [32, 64])
def test_denormal_normed_values_are_kept(head):
    # The normed head is rounded to bf16 before the rotation; AVX-512's one-instruction rounding would flush the
    # denormal ones (weight 2^-130) to zero. Identity rotation (cos 1, sin 0), so q = k = the rounded normed head.
    # Head 32 takes the kernel's blocks of 16, head 64 its blocks of 32.
    tiny = [1, 18, 30] + ([33, 50, 63] if head == 64 else [])
    qkv = torch.ones(2, 3 * head, dtype=torch.bfloat16)
    w = torch.ones(head, dtype=torch.bfloat16)
    w[tiny] = 2.0**-130
    cos, sin = torch.ones(2, head, dtype=torch.bfloat16), torch.zeros(2, head, dtype=torch.bfloat16)
    args = (qkv, sin, cos, head, head, head, 1e-6, w, w)
    got, want = ops.split_qkv_rmsnorm_rope(*args), ref.split_qkv_rmsnorm_rope(*args)
    _check_all(got, want, exact=(0, 1, 2))
    assert (got[0][:, tiny] != 0).all()


def test_out_tuple_is_written_and_returned():
    qkv = torch.randn(2, 3 * 64, dtype=torch.bfloat16)
    cos, sin = _full_tables(2, 64, torch.bfloat16)
    out = tuple(torch.full((2, 64), 7.0, dtype=torch.bfloat16) for _ in range(3))
    got = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 64, 64, 64, 1e-6, out=out)
    assert all(g is o for g, o in zip(got, out, strict=True))
    _check_all(got, ref.split_qkv_rmsnorm_rope(qkv, sin, cos, 64, 64, 64, 1e-6), exact=(2,))


def test_zero_tokens():
    qkv = torch.empty(0, 3 * 64)
    cos = sin = torch.empty(0, 64)
    q, k, v = ops.split_qkv_rmsnorm_rope(qkv, sin, cos, 64, 64, 64, 1e-6)
    assert q.shape == (0, 64) and k.shape == (0, 64) and v.shape == (0, 64)


def test_mrope_tables_after_a_fake_trace_and_under_inference_mode():
    """Nothing made under a tracing or inference mode is reused by later plain calls."""
    from sgl_npu_norm.rope import _mrope_tables
    from torch.fx.experimental.proxy_tensor import make_fx

    cos_sin = torch.randn(3, 4, 8)
    make_fx(lambda cs: _mrope_tables(cs, [1, 2, 1], True, 8), tracing_mode="fake")(cos_sin)
    with torch.inference_mode():
        _mrope_tables(cos_sin, [1, 2, 1], True, 8)
    want = _mrope_tables(cos_sin.clone(), [1, 2, 1], True, 8)
    got = _mrope_tables(cos_sin.requires_grad_(), [1, 2, 1], True, 8)
    assert all(torch.equal(g.detach(), w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("in_place", [False, True])
def test_two_head_groups_in_one_call_match_two_calls(dtype, in_place):
    """head_norm_rope's second group (x2 into out2, every other argument shared) against a call per group."""
    q, k = torch.randn(5, 4, 64, dtype=dtype), torch.randn(5, 2, 64, dtype=dtype)
    cos, sin = _full_tables(5, 32)
    w = torch.randn(64, dtype=dtype)
    args = (w, None, 1e-6, False, True, None, cos, sin, None, 32, True, True)
    want_q, want_k = torch.empty_like(q), torch.empty_like(k)
    N = torch.ops.sgl_npu_norm
    N.head_norm_rope(q, *args, want_q)
    N.head_norm_rope(k, *args, want_k)
    if in_place:
        got_q, got_k = q.clone(), k.clone()
        N.head_norm_rope(None, *args, got_q, None, got_k)
    else:
        got_q, got_k = torch.empty_like(q), torch.empty_like(k)
        N.head_norm_rope(q, *args, got_q, k, got_k)
    assert torch.equal(got_q, want_q) and torch.equal(got_k, want_k)
