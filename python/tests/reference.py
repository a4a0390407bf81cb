# SPDX-License-Identifier: MIT
"""Independent references for the tests: the formulas written out in NumPy, in long double."""
import numpy as np


def random(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def reference_attention(q, k, v, mask=None, is_causal=False, scale=None):
    """softmax(q k^T * scale + mask) v in long double, batched by NumPy broadcasting. `mask`: bool
    (True = attend) or additive. A query that sees no key gets weights 0 (and output 0), lse -inf.
    Returns (out, lse, weights) as long double arrays."""
    q, k = np.asarray(q, np.longdouble), np.asarray(k, np.longdouble)
    scale = 1 / np.sqrt(np.longdouble(q.shape[-1])) if scale is None else np.longdouble(scale)
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    length, keys = scores.shape[-2:]
    if is_causal:
        scores = np.where(np.tril(np.ones((length, keys), bool)), scores, -np.inf)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            scores = np.where(mask, scores, -np.inf)
        else:
            scores = scores + mask.astype(np.longdouble)
    row_max = scores.max(axis=-1, keepdims=True)
    hidden = np.isneginf(row_max)
    shifted = np.exp(scores - np.where(hidden, 0, row_max))
    total = shifted.sum(axis=-1, keepdims=True)
    weights = np.where(hidden, 0, shifted / np.where(hidden, 1, total))
    with np.errstate(divide="ignore"):
        lse = np.where(hidden, -np.inf, row_max + np.log(total))[..., 0]
    out = None if v is None else np.matmul(weights, np.asarray(v, np.longdouble))
    return out, lse, weights


def tolerance(dtype):
    """Relative-to-scale tolerance: a few hundred ulp of the dtype, for sums over a few hundred
    terms of order 1."""
    return {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-12}[np.dtype(dtype)]


def assert_close(actual, expected, dtype):
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.max(np.abs(expected))) if expected.size else 1.0)
    error = float(np.max(np.abs(actual.astype(np.float64) - expected))) if expected.size else 0.0
    assert error <= tolerance(dtype) * scale, f"max |difference| {error:.3g}"
