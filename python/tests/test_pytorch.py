# SPDX-License-Identifier: MIT
"""The module against PyTorch itself (Debian's python3-torch, 1.13): scaled_dot_product_attention
against torch's SDPA and nn.MultiheadAttention(need_weights=False), on torch tensors. Skipped,
with the reason, where torch cannot be imported."""
import numpy as np
import pytest

import attention
from reference import assert_close, random

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed (Debian: python3-torch): comparisons with torch skipped")
F = torch.nn.functional


def torch_sdpa(q, k, v, attn_mask=None, is_causal=False):
    """PyTorch's SDPA: public from 2.0 on; in 1.13 the private _scaled_dot_product_attention
    (same conventions: bool True = attend, is_causal top-left), which returns (out, weights)."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    return F._scaled_dot_product_attention(q, k, v, attn_mask, 0.0, False, is_causal)[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "causal"])
def test_scaled_dot_product_attention_equals_torch(dtype, mask_kind):
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 33, 16, generator=generator, dtype=dtype)
    k = torch.randn(2, 4, 50, 16, generator=generator, dtype=dtype)
    v = torch.randn(2, 4, 50, 24, generator=generator, dtype=dtype)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(33, 50, generator=generator) < 0.7
        mask[:, 0] = True  # no fully masked row: torch gives NaN there, we give 0
    elif mask_kind == "float":
        mask = torch.randn(2, 1, 33, 50, generator=generator, dtype=dtype)
    is_causal = mask_kind == "causal"
    expected = torch_sdpa(q, k, v, mask, is_causal).numpy()
    # Torch tensors go in as they are, through __array__.
    out = attention.scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal)
    assert out.dtype == expected.dtype
    assert_close(out, expected, out.dtype)


def test_fully_masked_row_is_zero_where_torch_gives_nan():
    q = torch.randn(3, 8, dtype=torch.float64)
    mask = torch.ones(3, 3, dtype=torch.bool)
    mask[1] = False
    ours = attention.scaled_dot_product_attention(q, q, q, mask)
    theirs = torch_sdpa(q, q, q, mask).numpy()
    assert np.all(ours[1] == 0.0) and np.all(np.isnan(theirs[1]))
    assert_close(ours[[0, 2]], theirs[[0, 2]], np.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_kind", ["none", "causal", "bool"])
def test_multi_head_attention_equals_torch_module(dtype, mask_kind):
    torch.manual_seed(1)
    embed_dim, num_heads, length = 64, 8, 37
    module = torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True, dtype=dtype)
    with torch.no_grad():  # non-zero biases, so that they are tested too
        module.in_proj_bias.uniform_(-0.5, 0.5)
        module.out_proj.bias.uniform_(-0.5, 0.5)
    module.eval()
    layer = attention.MultiHeadAttention(embed_dim, num_heads)
    layer.load_pytorch(*(p.detach().numpy() for p in (module.in_proj_weight, module.in_proj_bias,
                                                      module.out_proj.weight,
                                                      module.out_proj.bias)))
    x = torch.randn(3, length, embed_dim, dtype=dtype)
    keep = torch.ones(length, length, dtype=torch.bool)
    if mask_kind == "causal":
        keep = torch.tril(keep)
    elif mask_kind == "bool":
        keep = torch.rand(length, length) < 0.7
        keep[:, 0] = True
    with torch.no_grad():
        # nn.MultiheadAttention's bool mask means the opposite of ours: True = masked.
        expected, _ = module(x, x, x, need_weights=False,
                             attn_mask=None if mask_kind == "none" else ~keep)
    if mask_kind == "causal":
        y = layer(x.numpy(), is_causal=True)
    else:
        y = layer(x.numpy(), None if mask_kind == "none" else keep.numpy())
    assert_close(y, expected.numpy(), y.dtype)
