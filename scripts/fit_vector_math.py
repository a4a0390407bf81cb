#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fits the polynomials of the vectorised exp() and tanh() in include/attention/kernels/vector_math.hpp.

Needs mpmath (Debian: python3-mpmath); the library and its tests do not. Prints, for float and
double, the coefficients as they stand in vector_math.hpp and the largest relative error of the
function they give (exactly evaluated; the rounding of the vector code's steps comes on top).

  exp:  e^r = 1 + r + r^2 Q(r) on |r| <= ln(2)/2 + 0.004 (the rounding of n = round(x / ln 2)),
        Q of degree 4 (float) and 9 (double), fitted to (e^r - 1 - r) / r^2.
  exp2: 2^r = 1 + r P(r) on |r| <= 1/2 (r = t - round(t), exactly), P of degree 5 (float), fitted
        to (2^r - 1) / r: the base-2 softmax weight of Simd::exp_weight on AVX-512. For double,
        on |r| <= 1/16 (r = t - round(8 t) / 8, the rest 2^(j/8) taken from a table), P of
        degree 6; the table's entries 2^(j/8), j = 0 .. 7, rounded to double, are printed too.
  tanh: tanh x = x + x^3 P(x^2) on |x| <= 0.5625, P of degree 4 (float) and 10 (double), fitted to
        (tanh(x) / x - 1) / x^2 as a polynomial in u = x^2.
Each fit is a weighted least-squares fit on Chebyshev nodes, its weights refined by Lawson's
iteration towards the minimax (equal-ripple) polynomial, with weights that make the error that of
the function, relative (e.g. r^2 / e^r for Q).
"""
import struct

import mpmath as mp

mp.mp.dps = 50


def fit(f, weight, lo, hi, degree, nodes=200, iterations=15):
    xs = [(lo + hi) / 2 + (hi - lo) / 2 * mp.cos(mp.pi * (k + mp.mpf(1) / 2) / nodes)
          for k in range(nodes)]
    lawson = [mp.mpf(1)] * nodes
    for _ in range(iterations):
        a = mp.matrix(nodes, degree + 1)
        y = mp.matrix(nodes, 1)
        for i, x in enumerate(xs):
            w = weight(x) * mp.sqrt(lawson[i])
            for j in range(degree + 1):
                a[i, j] = w * x**j
            y[i] = w * f(x)
        c = mp.lu_solve(a.T * a, a.T * y)
        errors = [abs(weight(x) * (sum(c[j] * x**j for j in range(degree + 1)) - f(x))) for x in xs]
        total = sum(lawson[i] * errors[i] for i in range(nodes))
        lawson = [lawson[i] * errors[i] / total for i in range(nodes)]
    return [c[j] for j in range(degree + 1)]


def to_float(c):
    return struct.unpack('f', struct.pack('f', float(c)))[0]


def report(name, coefficients, rounding, f, weight, lo, hi, suffix):
    rounded = [rounding(c) for c in coefficients]
    grid = [lo + (hi - lo) * k / 4000 for k in range(4001)]
    error = max(abs(weight(x) * (sum(mp.mpf(c) * x**j for j, c in enumerate(rounded)) - f(x)))
                for x in grid)
    print(f'{name}: largest relative error {mp.nstr(error, 3)}')
    print('  {' + ', '.join(repr(c) + suffix for c in rounded) + '}')


def main():
    r_max = mp.log(2) / 2 + mp.mpf('0.004')
    q = lambda r: (mp.exp(r) - 1 - r) / r**2 if r != 0 else mp.mpf(1) / 2
    q_weight = lambda r: r**2 / mp.exp(r)
    for degree, rounding, name, suffix in [(4, to_float, 'exp float', 'f'),
                                           (9, float, 'exp double', '')]:
        report(name, fit(q, q_weight, -r_max, r_max, degree), rounding, q, q_weight, -r_max, r_max,
               suffix)
    p2 = lambda r: (mp.power(2, r) - 1) / r if r != 0 else mp.log(2)
    p2_weight = lambda r: r / mp.power(2, r)
    half = mp.mpf(1) / 2
    report('exp2 float', fit(p2, p2_weight, -half, half, 5), to_float, p2, p2_weight, -half, half,
           'f')
    sixteenth = mp.mpf(1) / 16
    report('exp2 double', fit(p2, p2_weight, -sixteenth, sixteenth, 6), float, p2, p2_weight,
           -sixteenth, sixteenth, '')
    print('  table {' + ', '.join(repr(float(mp.power(2, mp.mpf(j) / 8))) for j in range(8)) + '}')
    u_max = mp.mpf('0.5625')**2
    p = lambda u: (mp.tanh(mp.sqrt(u)) / mp.sqrt(u) - 1) / u if u != 0 else -mp.mpf(1) / 3
    p_weight = lambda u: u / (mp.tanh(mp.sqrt(u)) / mp.sqrt(u)) if u != 0 else u
    for degree, rounding, name, suffix in [(4, to_float, 'tanh float', 'f'),
                                           (10, float, 'tanh double', '')]:
        report(name, fit(p, p_weight, mp.mpf(0), u_max, degree), rounding, p, p_weight, mp.mpf(0),
               u_max, suffix)


if __name__ == '__main__':
    main()
