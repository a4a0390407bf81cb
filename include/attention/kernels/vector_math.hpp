#pragma once
// SPDX-License-Identifier: MIT
//
// The constants of the vectorised exp() and tanh() that kernels/simd_members.inc builds, once per
// instruction set, for the SIMD classes of kernels/simd_{sse2,avx2,avx512}.hpp (issue 18), the
// Simd of the kernels' avx2 and avx512 paths.
//
// exp(x), for float and double (Cody & Waite, "Software Manual for the Elementary Functions",
// 1980, ch. 6; Muller, "Elementary Functions", 3rd ed., 2016, sec. 11.2):
//   1. Clamp x to [x_min, x_max]: below x_min, e^x is under half the least subnormal and rounds to
//      0 (so exp(-inf) = +0 exactly); above x_max it overflows to +inf (so exp(+inf) = +inf). The
//      clamp is written so that NaN passes through, and NaN then propagates to the result.
//   2. n = round(x / ln 2), by adding and subtracting 1.5 * 2^p (p = 23 or 52 mantissa bits), which
//      rounds to the nearest integer without a rounding instruction (SSE2 has none).
//   3. r = x - n ln 2 in two steps, ln 2 = ln2_hi + ln2_lo, where ln2_hi has so few bits that
//      n * ln2_hi is exact for every n reached; x - n * ln2_hi is then exact (Sterbenz), with or
//      without FMA, and |r| <= ln 2 / 2 (+ a rounding).
//   4. e^r = 1 + r + r^2 Q(r), Q a polynomial fitted to (e^r - 1 - r) / r^2 on |r| <= 0.3506 for
//      the least relative error of e^r (scripts/fit_vector_math.py; fit error 5.2e-9 for float,
//      9.0e-18 for double, i.e. below 0.1 ulp; the rest of the error is the rounding of the steps).
//   5. e^x = e^r * 2^n. 2^n is built from exponent bits in two factors, 2^n1 * 2^n2 with
//      n1 = clamp(n, e_min, e_max), so that n from x_min to x_max (beyond the normal exponents at
//      both ends) needs no special case: e^r * 2^n1 is exact and the second product rounds once,
//      to a subnormal, 0 or +inf where it must. AVX-512 does the same in one instruction
//      (vscalefps).
// Simd::exp_weight, for softmax weights (x <= 0), takes 2^n in one factor and returns +0 where
// e^x is below the least normal number (x < x_normal) instead of rounding to a subnormal.
// Error against long double std::exp, subnormal results included, with or without FMA: at most
// 1.01 ulp measured (dense sweeps of tests/kernels/simd_isa_test.cpp, which asserts 1.5 ulp, and
// 67M random floats).
//
// exp_weight in base 2 (floats and doubles on AVX-512, where vrndscaleps/pd, vreduceps/pd and
// vscalefps/pd make the reduction three independent instructions): e^x = 2^t, t = x log2e; for
// floats then
//   n = round(t), r = t - n (exact, |r| <= 1/2),  2^r = 1 + r P(r),  e^x = 2^r * 2^n (scalef),
// P of degree 5 fitted to (2^r - 1) / r on |r| <= 1/2 (scripts/fit_vector_math.py). 11 operations
// per vector with the caller's x = s - m and the sum, against 15 for the steps above, and 7 of them
// on the FMA pipes against 9 (on Zen 5 vrndscaleps, vreduceps and vscalefps issue beside 16 FMAs
// without slowing them, a multiply does not). Its error, relative to e^x for a normal result,
// u = 2^-24 (float's unit roundoff), is at most
//   |w - e^x| <= (exp2_error + exp2_error_per_x |x|) u e^x    (ExpConstants<float>: 2.5, 1.25)
// - The argument: t = fl(x log2e_f) = x log2e (1 + e_L)(1 + d), |d| <= u, where e_L =
//   log2e_f / log2e - 1 = -1.34e-8 = -0.225 u is the constant's rounding to float. 2^t is then
//   e^x e^(x (e_L + d)): a relative error of |x| (1 + 0.225) u to first order, 1.25 |x| u with the
//   second order for |x| <= 104 (below, e^x is not a normal float). Cody & Waite's reduction above
//   keeps ln 2 in two parts so that no such term appears; here it grows with |x|, where the weight
//   is small (below).
// - The polynomial: fit error 1.6e-8 = 0.27 u with the coefficients rounded to float; Horner's rule
//   with FMA, P in [0.57, 0.83] on |r| <= 1/2: P's last step rounds once (u) and the steps before
//   enter scaled by |r (P - p_0)| / P <= 0.23, so P is within 1.3 u; its error enters 1 + r P(r)
//   scaled by |r P| / 2^r <= 0.41 (0.55 u), and that last step rounds once (u): 1.82 u in all,
//   which exp2_error = 2.5 bounds with a margin.
// - scalef: 2^r * 2^n is exact for a normal result; below the normal range it rounds once,
//   absolute error <= 2^-150 (half the least subnormal), as exp's step 5.
// - Specials: x = -inf gives t = -inf, r = +0 (vreduceps of an infinity), 2^r = 1, 1 * 2^-inf =
//   +0; NaN stays NaN; x = 0 gives exactly 1 (P is multiplied by r = 0), so the largest weight of
//   a row is 1 and its sum l >= 1, as with exp.
// For doubles the same reduction to |r| <= 1/2 would need P of degree 10 for a fit error below
// u = 2^-53 (0.24 u; degree 9: 2.1 u), 12 operations on the FMA pipes. Reduced to |r| <= 1/16
// instead (Tang, "Table-driven implementation of the exponential function in IEEE floating-point
// arithmetic", ACM TOMS 15(2), 1989, with a table of 8 = 2^3 entries), degree 6 suffices:
//   n = round(8 t) / 8 (vrndscalepd, 3 fraction bits), r = t - n (vreducepd, exact),
//   j = 8 n mod 8, T_j = 2^(j/8) rounded to double (exp2_table, one vector; vpermpd picks T_j
//   from the low 3 bits of n + 1.5 * 2^49, whose last mantissa bit is worth 1/8),
//   e^x = (T_j + (T_j r) P(r)) * 2^floor(n)   (scalef takes the floor of n; n - floor(n) = j / 8),
// P of degree 6 fitted to (2^r - 1) / r on |r| <= 1/16 (scripts/fit_vector_math.py): 9 operations
// on the FMA pipes against 14 for exp's steps. Its error, the same way (ExpConstants<double>: 2.5,
// 1.15):
// - The argument: e_L = log2e_d / log2e - 1 = -0.127 u, so |x| (1 + 0.127) u to first order; the
//   second order is below 1e-13 of that for |x| <= 746 (below, e^x rounds to 0): 1.15 |x| u.
// - The polynomial: fit error 4.8e-18 = 0.043 u with the coefficients rounded to double; P in
//   [0.67, 0.72], the steps before Horner's last enter scaled by |r (P - p_0)| / P <= 0.0015, so P
//   is within 1.01 u. T_j is within u of 2^(j/8). T_j r rounds once (u); it and P's error enter
//   the sum scaled by |r P| / (1 + r P) <= 0.047, and the FMA rounds once (u): 0.043 + 1 (T_j) +
//   0.1 + 1 = 2.15 u, which exp2_error = 2.5 bounds.
// - Specials: as for floats (x = -inf: r = +0 and index bits of -inf, j = 0, T_0 = 1, 1 * 2^-inf =
//   +0; x = 0: n = 0, j = 0, T_0 = 1 exactly, r = 0, so exactly 1). Far below (x < -746, e.g.
//   -1e300) scalef's 2^floor(n) takes any T_j in [1, 2) to +0, whatever bits the index then reads.
// In attention: with p_j = e^(x_j) / l the weights of a row of S keys, x_j <= 0, the entropy
// sum_j p_j (-x_j) + ln l is at most ln S and ln l >= 0, so the weights' relative errors average
// (over p) to at most (exp2_error + exp2_error_per_x ln S) u: 13 u (floats) and 12 u (doubles) at
// S = 4096 (a tile's x_j are relative to the running max, never larger in magnitude). The sum l,
// the lse and out = sum_j p_j v_j / l move by that much (out by twice that times max |v|) on top
// of the products' rounding, well inside tests/trust/accuracy.hpp's bounds (1e-4 at input scale 1;
// 2x the materialising path, which shares these weights).
//
// tanh(x), odd, computed on |x| and given the sign of x at the end (so tanh(-0) = -0):
//   - |x| < small_max = 0.5625: tanh x = x + x^3 P(x^2), P fitted on [0, small_max^2] (fit error
//     2.6e-9 float, 6.4e-18 double); no cancellation, and tanh(tiny) = tiny.
//   - |x| >= small_max: tanh|x| = 1 - 2 / (e^{2|x|} + 1), |x| clamped at large_max, where the
//     result already rounds to 1: tanh(+-inf) = +-1. There tanh >= 0.51, so the subtraction loses
//     at most a bit.
// NaN propagates. Measured as for exp: at most 1.39 ulp, near small_max (the test asserts 2 ulp).

namespace attention::detail::kernels {

template <typename Scalar>
struct ExpConstants;
template <typename Scalar>
struct TanhConstants;

template <>
struct ExpConstants<float> {
  // e^-105 < 2^-150 (half the least subnormal, e^-103.97); e^89 > FLT_MAX (e^88.72).
  static constexpr float x_min = -105.0f, x_max = 89.0f;
  static constexpr float log2e = 1.44269502f;
  static constexpr float round_magic = 12582912.0f;  // 1.5 * 2^23
  // 355 / 512 (9 bits): n * ln2_hi is exact for |n| < 2^15; ln2_lo = ln 2 - ln2_hi, rounded.
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194442e-4f;
  // n1 = clamp(n, e_min, e_max) is a normal exponent; 2^n1 has the bits of (n1 + 127) << 23, read
  // from the float n1 + bias_magic = 1.5 * 2^23 + 127 + n1.
  static constexpr float e_min = -126.0f, e_max = 127.0f, bias_magic = 12583039.0f;
  // ln(FLT_MIN) = -87.336544..., rounded up: below it e^x is subnormal (exp_weight's flush).
  static constexpr float x_normal = -87.3365402f;
  static constexpr int mantissa_bits = 23;
  // Q(r) = q[0] + q[1] r + ... (scripts/fit_vector_math.py)
  static constexpr float q[] = {0.4999999403953552f, 0.16666513681411743f, 0.04166846722364426f,
                                0.00836953241378069f, 0.0013812881661579013f};
  // exp_weight in base 2: 2^r = 1 + r P(r), P(r) = exp2_p[0] + exp2_p[1] r + ...
  // (scripts/fit_vector_math.py), and its error bound (top of this file) in units of u = 2^-24.
  static constexpr float exp2_p[] = {0.6931471824645996f,   0.24022647738456726f,
                                     0.055503323674201965f, 0.00961843691766262f,
                                     0.001339888432994485f, 0.00015353424532804638f};
  static constexpr double exp2_error = 2.5, exp2_error_per_x = 1.25;
};

template <>
struct ExpConstants<double> {
  // e^-746 < 2^-1075 (e^-745.13); e^710 > DBL_MAX (e^709.78).
  static constexpr double x_min = -746.0, x_max = 710.0;
  static constexpr double log2e = 1.4426950408889634;
  static constexpr double round_magic = 6755399441055744.0;  // 1.5 * 2^52
  // ln2_hi = 3048493539143 / 2^42 (42 bits): n * ln2_hi is exact for |n| < 2^11.
  static constexpr double ln2_hi = 0.6931471805598903, ln2_lo = 5.497923018708371e-14;
  static constexpr double e_min = -1022.0, e_max = 1023.0, bias_magic = 6755399441056767.0;
  // ln(DBL_MIN) = -708.39641853226410..., to double precision (exp_weight's flush).
  static constexpr double x_normal = -708.3964185322641;
  static constexpr int mantissa_bits = 52;
  static constexpr double q[] = {
      0.5000000000000012,     0.16666666666666383,    0.04166666666651726,   0.008333333333509765,
      0.001388888894747312,   0.00019841269483072732, 2.480148873408455e-05, 2.7557598675081907e-06,
      2.7631920801383683e-07, 2.4998909319794942e-08};
  // exp_weight in base 2 with a table of 2^exp2_fraction_bits entries (top of this file):
  // 2^r = 1 + r P(r) on |r| <= 1/16, P(r) = exp2_p[0] + exp2_p[1] r + ...
  // (scripts/fit_vector_math.py); exp2_table[j] = 2^(j/8) rounded to double; n + exp2_index_magic
  // (1.5 * 2^49, exact for |n| < 2^48) holds 8 n in its low mantissa bits. Error bound in units of
  // u = 2^-53.
  static constexpr int exp2_fraction_bits = 3;
  static constexpr double exp2_p[] = {
      0.6931471805599453,    0.24022650695911515,    0.05550410866480235,  0.00961812908517598,
      0.0013333558238986958, 0.00015404521993121935, 1.525184381773035e-05};
  static constexpr double exp2_table[] = {1.0,
                                          1.0905077326652577,
                                          1.189207115002721,
                                          1.2968395546510096,
                                          1.4142135623730951,
                                          1.5422108254079407,
                                          1.681792830507429,
                                          1.8340080864093424};
  static constexpr double exp2_index_magic = 844424930131968.0;
  static constexpr double exp2_error = 2.5, exp2_error_per_x = 1.15;
};

template <>
struct TanhConstants<float> {
  // tanh(10) = 1 - 4e-9 rounds to 1 (half an ulp below 1 is 3e-8).
  static constexpr float small_max = 0.5625f, large_max = 10.0f;
  static constexpr float p[] = {-0.3333331346511841f, 0.1333245187997818f, -0.053837407380342484f,
                                0.02100737765431404f, -0.0061797089874744415f};
};

template <>
struct TanhConstants<double> {
  // tanh(20) = 1 - 8e-18 rounds to 1 (half an ulp below 1 is 5.6e-17).
  static constexpr double small_max = 0.5625, large_max = 20.0;
  static constexpr double p[] = {
      -0.33333333333333276,    0.13333333333323127,   -0.05396825396172213,   0.021869488327221465,
      -0.008863231636410264,   0.003592082243149523,  -0.0014554796021891707, 0.0005881835004131991,
      -0.00023271587320734883, 8.236047344988398e-05, -1.890370323713421e-05};
};

}  // namespace attention::detail::kernels
