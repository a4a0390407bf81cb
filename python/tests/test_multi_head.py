# SPDX-License-Identifier: MIT
"""MultiHeadAttention against nn.MultiheadAttention's formula written out in NumPy (long double),
with grouped-query attention, masks and batches."""
import numpy as np
import pytest

import attention
from reference import assert_close, random, reference_attention


def pytorch_parameters(embed_dim, kv_dim, dtype, seed=10):
    """nn.MultiheadAttention-style tensors: in_proj_weight stacks W_q, W_k, W_v (y = x W^T + b)."""
    scale = 1 / np.sqrt(embed_dim)
    return (random((embed_dim + 2 * kv_dim, embed_dim), seed, dtype) * scale,
            random(embed_dim + 2 * kv_dim, seed + 1, dtype) * 0.1,
            random((embed_dim, embed_dim), seed + 2, dtype) * scale,
            random(embed_dim, seed + 3, dtype) * 0.1)


def reference_multi_head(x, params, num_heads, num_kv_heads, mask=None, is_causal=False):
    """The layer written out: project, split into heads, query head h reads K/V head
    h // (num_heads // num_kv_heads), attend, concatenate, project."""
    w_in, b_in, w_out, b_out = (np.asarray(p, np.longdouble) for p in params)
    x = np.asarray(x, np.longdouble)
    embed_dim = x.shape[-1]
    head_dim = embed_dim // num_heads
    kv_dim = num_kv_heads * head_dim
    q = x @ w_in[:embed_dim].T + b_in[:embed_dim]
    k = x @ w_in[embed_dim:embed_dim + kv_dim].T + b_in[embed_dim:embed_dim + kv_dim]
    v = x @ w_in[embed_dim + kv_dim:].T + b_in[embed_dim + kv_dim:]
    group = num_heads // num_kv_heads
    heads = []
    for h in range(num_heads):
        g = h // group
        q_h = q[..., h * head_dim:(h + 1) * head_dim]
        k_g, v_g = (t[..., g * head_dim:(g + 1) * head_dim] for t in (k, v))
        heads.append(reference_attention(q_h, k_g, v_g, mask, is_causal)[0])
    return np.concatenate(heads, axis=-1) @ w_out.T + b_out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("num_heads,num_kv_heads", [(4, None), (4, 2), (4, 1)])
@pytest.mark.parametrize("is_causal", [False, True])
def test_matches_formula(dtype, num_heads, num_kv_heads, is_causal):
    embed_dim = 32
    kv_heads = num_kv_heads or num_heads
    params = pytorch_parameters(embed_dim, kv_heads * embed_dim // num_heads, dtype)
    layer = attention.MultiHeadAttention(embed_dim, num_heads, num_kv_heads)
    layer.load_pytorch(*params)
    assert layer.dtype == dtype and layer.num_kv_heads == kv_heads
    x = random((3, 19, embed_dim), 5, dtype)
    y = layer(x, is_causal=is_causal)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, reference_multi_head(x, params, num_heads, kv_heads, None, is_causal), dtype)


def test_masks_and_batch_broadcasting():
    embed_dim, num_heads = 16, 2
    params = pytorch_parameters(embed_dim, embed_dim, np.float64)
    layer = attention.MultiHeadAttention(embed_dim, num_heads)
    layer.load_pytorch(*params)
    x = random((2, 3, 7, embed_dim), 6)
    keep = np.random.default_rng(7).random((3, 7, 7)) < 0.7
    keep[..., 0] = True
    y = layer(x, keep)  # one mask per second batch index, shared by the first
    assert_close(y, reference_multi_head(x, params, num_heads, num_heads, keep), np.float64)
    bias = random((7, 7), 8)
    assert_close(layer(x, bias, is_causal=True),
                 reference_multi_head(x, params, num_heads, num_heads, bias, True), np.float64)


def test_biases_may_be_none():
    embed_dim = 8
    w_in, _, w_out, _ = pytorch_parameters(embed_dim, embed_dim, np.float64)
    layer = attention.MultiHeadAttention(embed_dim, 2)
    layer.load_pytorch(w_in, None, w_out, None)
    x = random((5, embed_dim), 9)
    zeros = (w_in, np.zeros(3 * embed_dim), w_out, np.zeros(embed_dim))
    assert_close(layer(x), reference_multi_head(x, zeros, 2, 2), np.float64)


def test_a_new_layer_is_float32_zeros():
    layer = attention.MultiHeadAttention(8, 2)
    y = layer(np.ones((3, 8), np.float32))
    assert y.dtype == np.float32 and np.all(y == 0.0)
    assert repr(layer) == ("attention.MultiHeadAttention(embed_dim=8, num_heads=2, "
                           "num_kv_heads=2, dtype=float32)")
    assert layer.head_dim == 4


def test_bad_sizes_raise_value_error_with_the_library_message():
    with pytest.raises(ValueError, match=r"num_heads \(= 3\) must divide d_model \(= 8\)"):
        attention.MultiHeadAttention(8, 3)
    with pytest.raises(ValueError, match=r"num_kv_heads \(= 3\) must divide num_heads \(= 4\)"):
        attention.MultiHeadAttention(8, 4, 3)
    layer = attention.MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match=r"x\.cols\(\) \(= 6\) must equal d_model \(= 8\)|"
                                         r"\(= 6\).*\(= 8\)"):
        layer(np.ones((3, 6), np.float32))
    with pytest.raises(ValueError, match=r"in_proj_weight has shape \(24, 6\); expected "
                                         r"\(E \+ 2 \* kv_dim, E\) = \(24, 8\)"):
        layer.load_pytorch(np.ones((24, 6)), None, np.ones((8, 8)), None)


def test_dtypes_must_agree():
    layer = attention.MultiHeadAttention(8, 2)
    with pytest.raises(TypeError, match="x has dtype float64 but the layer's weights are float32"):
        layer(np.ones((3, 8)))
    w_in, b_in, w_out, b_out = pytorch_parameters(8, 8, np.float64)
    with pytest.raises(TypeError, match="out_proj_weight has dtype float32 but in_proj_weight has "
                                        "float64"):
        layer.load_pytorch(w_in, b_in, w_out.astype(np.float32), b_out)
    with pytest.raises(TypeError, match="in_proj_weight has dtype int64"):
        layer.load_pytorch(w_in.astype(np.int64), b_in, w_out, b_out)


def test_batch_items_equal_single_calls():
    embed_dim = 16
    layer = attention.MultiHeadAttention(embed_dim, 4, 2)
    layer.load_pytorch(*pytorch_parameters(embed_dim, 8, np.float32))
    x = random((12, 9, embed_dim), 11, np.float32)
    y = layer(x, is_causal=True)
    for b in range(12):
        assert np.array_equal(y[b], layer(x[b], is_causal=True))
