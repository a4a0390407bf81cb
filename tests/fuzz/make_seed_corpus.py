#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Writes the committed seed corpus of attention_fuzz (tests/fuzz/corpus/), one file per case.

Byte layout read by attention_fuzz.cpp (run<Scalar>):
  type (% 2: 0 float, 1 double), L, S, d_k, d_v (size codes), flags (mask kind = % 4:
  none, causal, keep, bias), scale code (< 128: default; else the next byte gives it), num_heads
  (% 5), corruption (< 200: none), then q, k, v values (one byte each), then the mask's bytes.
Run from anywhere: python3 tests/fuzz/make_seed_corpus.py
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
NAN, PINF, NINF, DENORM, NDENORM, MAX, NMAX, TINY = 240, 241, 242, 243, 244, 245, 246, 247


def size(n):
    if n == 0:
        return 0
    return 15 + n if n <= 8 else 200 + (n - 9)


def value(x):
    """Byte for an ordinary number x in [-7.5, 7.4] (steps of 1/16)."""
    return max(0, min(239, round(x * 16) + 120))


def case(type_, l, s, dk, dv, mask=0, scale=None, heads=1, corruption=0, specials=(), seed=0):
    rng = random.Random(seed)
    out = [type_, size(l), size(s), size(dk), size(dv), mask]
    out += [0] if scale is None else [255 if scale == "nan" else 130, NAN if scale == "nan" else scale]
    out += [heads, corruption]
    n_values = l * dk + s * dk + s * dv
    vals = [value(rng.gauss(0, 1.5)) for _ in range(n_values)]
    for i, b in specials:
        vals[i] = b
    out += vals
    out += [rng.randrange(256) for _ in range(l * s)]  # keep bits / bias codes
    return bytes(out)


CASES = {
    "float_plain_3x3": case(0, 3, 3, 4, 4, heads=2, seed=1),
    "double_causal_40x40_tiles": case(1, 40, 40, 8, 8, mask=1, heads=4, seed=2),
    "float_keep_5x7": case(0, 5, 7, 3, 2, mask=2, heads=3, seed=3),
    "float_bias_inf_4x6": case(0, 4, 6, 4, 4, mask=3, heads=2, seed=4),
    "double_nan_inf_denormal": case(1, 4, 5, 4, 3, heads=1, seed=5,
                                    specials=[(0, NAN), (5, PINF), (9, NINF), (17, DENORM),
                                              (21, MAX), (30, NDENORM), (33, TINY)]),
    "float_scale_nan": case(0, 3, 3, 2, 2, scale="nan", seed=6),
    "float_scale_zero": case(0, 6, 5, 4, 4, mask=1, scale=128, heads=2, seed=7),
    "double_scale_negative": case(1, 6, 5, 4, 4, scale=64, heads=4, seed=8),
    "float_k_cols_mismatch": case(0, 3, 4, 4, 4, corruption=200, seed=9),
    "double_empty_queries": case(1, 0, 4, 4, 4, seed=10),
    "float_cross_tiles_64x33": case(0, 64, 33, 24, 24, mask=2, heads=4, seed=11),
}

if __name__ == "__main__":
    corpus = os.path.join(HERE, "corpus")
    os.makedirs(corpus, exist_ok=True)
    for name, data in CASES.items():
        with open(os.path.join(corpus, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(CASES)} seeds to {corpus}")
    # Also committed, not generated: inputs the fuzzer found, kept as regression seeds, e.g.
    # float_scale_zero_overflowing_dot (scale 0 times a q k^T that overflows float: NaN, not 0).
