#pragma once
// SPDX-License-Identifier: MIT
//
// The vector interface the kernels are written against, and its implementation on Eigen's packets.
//
// Every kernel that depends on the instruction set -- the micro-kernels, the row loops of the score
// pipeline, the forward tile loop, decode and the backward tiles -- names vectors only through
// `Simd<Scalar>`, a class with static members:
//
//   Vec                          one SIMD register of `width` Scalars
//   width, registers             lanes per vector; vector registers of the target (16 or 32)
//   vectorized, has_exp, has_tanh
//   zero(), broadcast(x)
//   load(p) / loadu(p)           aligned / unaligned load of width Scalars
//   load_widened(p)              width half, bfloat16 or int8 entries as float lanes (float only)
//   store_narrowed(p, v)         v rounded to width half or bfloat16 entries (float only)
//   store(p, v) / storeu(p, v)
//   add, sub, mul, max           max propagates NaN: max(NaN, x) = max(x, NaN) = NaN
//   fma(a, b, c)                 a * b + c, one fused instruction where the target has FMA
//   in_register(v)               v, kept in a register (see multiply_add_block)
//   exp(x), tanh(x)              lane-wise
//   exp_weight(x)                exp(x) as a softmax weight: +0 for -inf, possibly +0 where e^x is
//                                subnormal
//   zero_where_equal(y, x, key)  y, with 0 in the lanes where x == key
//   nan_or(x, y)                 x in the lanes where x is NaN, y elsewhere
//   sum(v), max_of(v)            horizontal sum, horizontal NaN-propagating max
//   sum_each(x), max_each(x)     the same of `width` vectors x[i] at once, into lane i
//   has_lane_tree                true where sum_each and max_each are one transposing tree
//                                rather than `width` reductions (worth grouping rows for)
//   has_transpose, transpose(x)  where true: the width x width block x[0 .. width) transposed
//
// No kernel signature mentions a packet type, and nothing else of Eigen::internal is used outside
// this file. A new instruction set (issue 18) is a new class with these members, written with
// intrinsics or vector extensions inside a target region (`#pragma GCC target`): Eigen picks its
// packets once per translation unit from the compiler's macros, which a target region does not
// set. The kernels compiled for that ISA are the same source text, included again inside the
// region in a namespace where `Simd` names the new class (GCC and clang refuse to inline an
// intrinsic into a function compiled without its target, and a template defined outside the
// region gets no target, so the kernel templates must be defined inside it). The code that does
// not depend on the ISA -- scheduling.hpp, workspace.hpp, online_softmax.hpp, the masks -- is
// compiled once and shared.
//
// Also here, so that it is defined in one place: the -Wignored-attributes push/pop that Eigen's
// packet types need. ATTENTION_UNROLL (full unrolling of the register-block loops) is in
// target_regions.hpp, which the per-ISA SIMD classes include too.

#include <Eigen/Core>
#include <limits>
#include <type_traits>

#include "attention/kernels/target_regions.hpp"
#include "attention/types.hpp"

// Eigen's packet types are raw compiler vector types (__m256, __m512d, ...) whose alignment
// attributes GCC reports as ignored when they appear as template arguments, which is how Eigen's
// packet functions are called; Eigen silences the same warning inside its own headers. Only this
// file names them.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace attention::detail {
namespace kernels {

/// True where the tiled kernels apply: float and double, for which Eigen has vectorised exp().
template <typename Scalar>
inline constexpr bool supported = std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>;

/// The vector interface (top of this file) on Eigen's packets: SSE2, AVX2/FMA, AVX-512 or NEON,
/// whichever the compiler's flags enable. For a type Eigen does not vectorise (long double) Vec is
/// the scalar itself and width 1; callers then take their scalar loops (`vectorized` is false).
template <typename Scalar>
struct EigenSimd {
  using Traits = Eigen::internal::packet_traits<Scalar>;
  using Vec = typename Traits::type;
  static constexpr Index width = Traits::size;
  static constexpr bool vectorized = width > 1;
  static constexpr bool has_exp = vectorized && Traits::HasExp;
  static constexpr bool has_tanh = vectorized && Traits::HasTanh;
  static constexpr bool has_lane_tree = false, has_transpose = false;
#if defined(EIGEN_VECTORIZE_AVX512)
  static constexpr int registers = 32;
#else
  static constexpr int registers = 16;
#endif

  static EIGEN_ALWAYS_INLINE Vec zero() { return Eigen::internal::pset1<Vec>(Scalar(0)); }
  static EIGEN_ALWAYS_INLINE Vec broadcast(Scalar x) { return Eigen::internal::pset1<Vec>(x); }
  static EIGEN_ALWAYS_INLINE Vec load(const Scalar* p) { return Eigen::internal::pload<Vec>(p); }
  static EIGEN_ALWAYS_INLINE Vec loadu(const Scalar* p) { return Eigen::internal::ploadu<Vec>(p); }
  /// `width` entries at p of another type (Eigen::half, Eigen::bfloat16, std::int8_t), converted
  /// one by one: the portable form of the ISA classes' widening loads.
  template <typename Element>
  static EIGEN_ALWAYS_INLINE Vec load_widened(const Element* p) {
    EIGEN_ALIGN_MAX Scalar lane[width];
    for (Index i = 0; i < width; ++i) lane[i] = static_cast<Scalar>(p[i]);
    return Eigen::internal::pload<Vec>(lane);
  }
  /// v's lanes rounded one by one to Element (Eigen::half, Eigen::bfloat16) at p.
  template <typename Element>
  static EIGEN_ALWAYS_INLINE void store_narrowed(Element* p, Vec v) {
    EIGEN_ALIGN_MAX Scalar lane[width];
    Eigen::internal::pstore(lane, v);
    for (Index i = 0; i < width; ++i) p[i] = static_cast<Element>(lane[i]);
  }
  static EIGEN_ALWAYS_INLINE void store(Scalar* p, Vec v) { Eigen::internal::pstore(p, v); }
  static EIGEN_ALWAYS_INLINE void storeu(Scalar* p, Vec v) { Eigen::internal::pstoreu(p, v); }
  static EIGEN_ALWAYS_INLINE Vec add(Vec a, Vec b) { return Eigen::internal::padd(a, b); }
  static EIGEN_ALWAYS_INLINE Vec sub(Vec a, Vec b) { return Eigen::internal::psub(a, b); }
  static EIGEN_ALWAYS_INLINE Vec mul(Vec a, Vec b) { return Eigen::internal::pmul(a, b); }
  static EIGEN_ALWAYS_INLINE Vec fma(Vec a, Vec b, Vec c) {
    return Eigen::internal::pmadd(a, b, c);
  }
  /// v itself: the baseline path leaves operand placement to the compiler.
  static EIGEN_ALWAYS_INLINE Vec in_register(Vec v) { return v; }
  static EIGEN_ALWAYS_INLINE Vec max(Vec a, Vec b) {
    return Eigen::internal::pmax<Eigen::PropagateNaN>(a, b);
  }
  static EIGEN_ALWAYS_INLINE Vec exp(Vec x) { return Eigen::internal::pexp(x); }
  static EIGEN_ALWAYS_INLINE Vec tanh(Vec x) { return Eigen::internal::ptanh(x); }
  /// pexp clamps its argument to a finite x whose exp is a tiny positive number, not 0: -inf is
  /// set to 0 explicitly.
  static EIGEN_ALWAYS_INLINE Vec exp_weight(Vec x) {
    return zero_where_equal(exp(x), x, broadcast(-std::numeric_limits<Scalar>::infinity()));
  }
  static EIGEN_ALWAYS_INLINE Vec zero_where_equal(Vec y, Vec x, Vec key) {
    return Eigen::internal::pandnot(y, Eigen::internal::pcmp_eq(x, key));
  }
  static EIGEN_ALWAYS_INLINE Vec nan_or(Vec x, Vec y) {
    return Eigen::internal::pselect(Eigen::internal::pcmp_eq(x, x), y, x);
  }
  static EIGEN_ALWAYS_INLINE Scalar sum(Vec v) { return Eigen::internal::predux(v); }
  static EIGEN_ALWAYS_INLINE Scalar max_of(Vec v) {
    return Eigen::internal::predux_max<Eigen::PropagateNaN>(v);
  }
  /// Lane i = sum(x[i]): one reduction per vector.
  static EIGEN_ALWAYS_INLINE Vec sum_each(const Vec (&x)[width]) {
    EIGEN_ALIGN_MAX Scalar lane[width];
    for (Index i = 0; i < width; ++i) lane[i] = sum(x[i]);
    return Eigen::internal::pload<Vec>(lane);
  }
  /// Lane i = max_of(x[i]).
  static EIGEN_ALWAYS_INLINE Vec max_each(const Vec (&x)[width]) {
    EIGEN_ALIGN_MAX Scalar lane[width];
    for (Index i = 0; i < width; ++i) lane[i] = max_of(x[i]);
    return Eigen::internal::pload<Vec>(lane);
  }
};

/// The vector type the kernels of this namespace are compiled for (see the top of this file).
template <typename Scalar>
using Simd = EigenSimd<Scalar>;

/// n rounded up to a multiple of `multiple`.
inline Index round_up(Index n, Index multiple) { return (n + multiple - 1) / multiple * multiple; }

/// The kernels of the baseline path: the ISA-dependent bodies (kernels/for_each_isa.inc) compiled
/// for the compiler's flags on EigenSimd. Their names are also the names of this namespace (the
/// using-directive), so kernels::row_max is the baseline row_max; a dispatcher of the same name
/// declared here (kernels::multi_head_attention, ...) is not hidden by it. Argument-dependent
/// lookup ignores using-directives, so a body in kernels::avx2 that passes a kernels type
/// (ScoreRules, OnlineSoftmax, a workspace) never finds the baseline copy of a function as well as
/// its own.
namespace baseline {}
using namespace baseline;

}  // namespace kernels

/// The kernels' former namespace (kernels/flash.hpp): detail::flash::multi_head_attention and the
/// rest still name the same functions.
namespace flash = kernels;

}  // namespace attention::detail

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
