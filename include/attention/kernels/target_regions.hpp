#pragma once
// SPDX-License-Identifier: MIT
//
// Target regions: stretches of a header compiled for an instruction set that the compiler's flags
// do not enable, so that one binary built with plain -O2 carries a baseline, an AVX2 and an
// AVX-512 copy of the SIMD code and picks one at run time (issue 18; detail/cpu_features.hpp says
// which one the CPU can run; kernels/for_each_isa.inc compiles every kernel body in each region).
//
//   ATTENTION_HAS_DISPATCH       1 for GCC or clang on x86-64 (not MSVC, not clang-cl) unless the
//                                user defines ATTENTION_NO_DISPATCH; then 0, no region is emitted,
//                                the simd_<isa>.hpp headers define nothing, and only the Eigen path
//                                (kernels/simd.hpp, built for the compiler's flags) exists.
//   ATTENTION_TARGET_AVX2_BEGIN  ...  ATTENTION_TARGET_END
//   ATTENTION_TARGET_AVX512_BEGIN ... ATTENTION_TARGET_END
//   ATTENTION_TARGET_AVX512_BF16_BEGIN ... ATTENTION_TARGET_END
//                                every function defined in between, templates included (wherever
//                                they are instantiated), is compiled for that instruction set.
//                                Regions push and pop, so nothing leaks to the includer.
//
// The sets below are what the run-time check (detail::can_run) must find on the CPU, no more and
// no less: the compiler may use any instruction of the set anywhere in a region.
//   avx2:   AVX2 + FMA + F16C (every AVX2 CPU has the other two; F16C is for the low-precision
//           kernels' half-float conversions).
//   avx512: AVX-512 F, CD, BW, DQ and VL, i.e. x86-64-v4 (every AVX-512 CPU since Skylake-SP has
//           all five; kernels may then mask 8- and 16-bit lanes and use 256-bit AVX-512 forms),
//           plus the avx2 set.
//   avx512 + AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16): not a path of its own but the avx512 path's
//           bfloat16 kernels (kernels/bf16_forward.hpp), run only where the avx512 path runs and
//           detail::cpu_features().avx512_bf16 holds (kernels::bf16_path_available). Zen 4 and
//           later, Cooper Lake and Sapphire Rapids have it; Skylake-SP and Ice Lake do not, hence
//           a check of its own rather than a member of the avx512 set.
// The baseline is the compiler's own flags (SSE2 on plain x86-64) and needs no region.
//
// Rules for code inside a region (checked with GCC 12 and clang 14):
// - Include every header before the region: a standard or Eigen header included inside it would
//   compile its inline functions for the region's target, and the linker keeps one copy of each
//   for the whole program, which may then run on a CPU without the instructions.
// - Vector types (__m256, ...) may cross function boundaries only between functions of the same
//   region; entry points called from outside take pointers and sizes.
// - On GCC, a lambda without captures that takes or returns a vector type fails to compile
//   ("AVX vector return without AVX enabled changes the ABI", -Wpsabi): its conversion to a
//   function pointer is not in the region. Give such lambdas a capture ([&]) or use a function.
// - Eigen's packet functions (Eigen::internal::p*) must not be used: Eigen chose its packet types
//   for the whole translation unit from the compiler's macros (__AVX2__, ...), which a region does
//   not define.

#if !defined(ATTENTION_NO_DISPATCH) && defined(__x86_64__) && !defined(_MSC_VER) && \
    (defined(__GNUC__) || defined(__clang__))
#define ATTENTION_HAS_DISPATCH 1
#else
#define ATTENTION_HAS_DISPATCH 0
#endif

/// Full unrolling of a register-block loop (a loop over an array of vectors, which stays in
/// registers only once unrolled): GCC 12 at -O2 keeps such loops, e.g. the SIMD classes' lane
/// trees, as loops over a spilled array. Defined with or without the dispatch: the baseline
/// kernels (Eigen's packets) use it too.
#if defined(__clang__)
#define ATTENTION_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ATTENTION_UNROLL _Pragma("GCC unroll 16")
#else
#define ATTENTION_UNROLL
#endif

#if ATTENTION_HAS_DISPATCH

// Every intrinsic of every instruction set is declared here, outside any region: GCC's and clang's
// <immintrin.h> declare each one with its own target attribute, whatever the flags.
#include <immintrin.h>

#include <type_traits>

// One string literal per _Pragma (literals are joined only after pragmas run): hence the long
// lines, which clang-format must not split.
// clang-format off
#if defined(__clang__)
// clang has no `#pragma GCC target`; an attribute pushed onto every function declared in between
// does the same.
#define ATTENTION_TARGET_AVX2_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx2,fma,f16c\"))), apply_to = function)")
#define ATTENTION_TARGET_AVX512_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx2,fma,f16c\"))), apply_to = function)")
#define ATTENTION_TARGET_AVX512_BF16_BEGIN \
  _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c\"))), apply_to = function)")
#define ATTENTION_TARGET_END _Pragma("clang attribute pop")
#else
// The regions set no tuning of their own (tune=...): a function compiled with other tuning
// options than its caller's is not inlined into it, so a region tuned for another CPU than the
// user's -mtune would call std::min and the small helpers out of line. The one codegen choice
// that tuning changed here, folding the micro-kernels' panel loads into their FMAs, is ruled out
// in the code instead (Simd::in_register).
#define ATTENTION_TARGET_AVX2_BEGIN \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,f16c\")")
#define ATTENTION_TARGET_AVX512_BEGIN \
  _Pragma("GCC push_options") \
  _Pragma("GCC target(\"avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx2,fma,f16c\")")
#define ATTENTION_TARGET_AVX512_BF16_BEGIN \
  _Pragma("GCC push_options") \
  _Pragma("GCC target(\"avx512f,avx512cd,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c\")")
#define ATTENTION_TARGET_END _Pragma("GCC pop_options")
#endif
// clang-format on

/// Forces a SIMD class's one-line members inline into the kernel that calls them. Calling one from
/// outside its region is then a compile error rather than a silent out-of-line call.
#define ATTENTION_SIMD_INLINE inline __attribute__((always_inline))

/// The members of a SIMD class's Ops (kernels/simd_members.inc) whose intrinsics have the same name
/// at every width: `prefix` is _mm_, _mm256_ or _mm512_, `suffix` ps or pd. Written once here
/// rather than three times with other prefixes. abs and with_sign_of act on the sign bit (-0.0).
/// (std::add_pointer_t<Scalar> is Scalar*, spelt so that the macro argument is not in an
/// expression.)
#define ATTENTION_SIMD_COMMON_OPS(prefix, Vec, Scalar, suffix)                                   \
  static ATTENTION_SIMD_INLINE Vec broadcast(Scalar x) { return prefix##set1_##suffix(x); }      \
  static ATTENTION_SIMD_INLINE Vec load(const Scalar* p) { return prefix##load_##suffix(p); }    \
  static ATTENTION_SIMD_INLINE Vec loadu(const Scalar* p) { return prefix##loadu_##suffix(p); }  \
  static ATTENTION_SIMD_INLINE void store(std::add_pointer_t<Scalar> p, Vec v) {                 \
    prefix##store_##suffix(p, v);                                                                \
  }                                                                                              \
  static ATTENTION_SIMD_INLINE void storeu(std::add_pointer_t<Scalar> p, Vec v) {                \
    prefix##storeu_##suffix(p, v);                                                               \
  }                                                                                              \
  static ATTENTION_SIMD_INLINE Vec add(Vec a, Vec b) { return prefix##add_##suffix(a, b); }      \
  static ATTENTION_SIMD_INLINE Vec sub(Vec a, Vec b) { return prefix##sub_##suffix(a, b); }      \
  static ATTENTION_SIMD_INLINE Vec mul(Vec a, Vec b) { return prefix##mul_##suffix(a, b); }      \
  static ATTENTION_SIMD_INLINE Vec div(Vec a, Vec b) { return prefix##div_##suffix(a, b); }      \
  static ATTENTION_SIMD_INLINE Vec x86_min(Vec a, Vec b) { return prefix##min_##suffix(a, b); }  \
  static ATTENTION_SIMD_INLINE Vec x86_max(Vec a, Vec b) { return prefix##max_##suffix(a, b); }  \
  static ATTENTION_SIMD_INLINE Vec abs(Vec x) {                                                  \
    return prefix##andnot_##suffix(prefix##set1_##suffix(Scalar(-0.0)), x);                      \
  }                                                                                              \
  static ATTENTION_SIMD_INLINE Vec with_sign_of(Vec t, Vec x) {                                  \
    return prefix##or_##suffix(t, prefix##and_##suffix(prefix##set1_##suffix(Scalar(-0.0)), x)); \
  }

/// The members that AVX2 and AVX-512 spell alike: FMA and the comparisons (`Mask` is the vector
/// type itself on AVX2, a mask register __mmask16 / __mmask8 on AVX-512, whose comparison
/// intrinsics end in `mask_suffix` = _mask). Comparisons are ordered: false where either is NaN.
#define ATTENTION_SIMD_AVX_OPS(prefix, Vec, Mask, suffix, mask_suffix) \
  static ATTENTION_SIMD_INLINE Vec fma(Vec a, Vec b, Vec c) {          \
    return prefix##fmadd_##suffix(a, b, c);                            \
  }                                                                    \
  static ATTENTION_SIMD_INLINE Mask is_nan(Vec x) {                    \
    return prefix##cmp_##suffix##mask_suffix(x, x, _CMP_UNORD_Q);      \
  }                                                                    \
  static ATTENTION_SIMD_INLINE Mask equal(Vec a, Vec b) {              \
    return prefix##cmp_##suffix##mask_suffix(a, b, _CMP_EQ_OQ);        \
  }                                                                    \
  static ATTENTION_SIMD_INLINE Mask less(Vec a, Vec b) {               \
    return prefix##cmp_##suffix##mask_suffix(a, b, _CMP_LT_OQ);        \
  }

#else

#define ATTENTION_TARGET_AVX2_BEGIN
#define ATTENTION_TARGET_AVX512_BEGIN
#define ATTENTION_TARGET_AVX512_BF16_BEGIN
#define ATTENTION_TARGET_END

#endif
