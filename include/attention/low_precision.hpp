#pragma once
// SPDX-License-Identifier: MIT
//
// bfloat16 and half inputs (Eigen::bfloat16, Eigen::half: Eigen 3.4's own types, from
// <Eigen/Core>). scaled_dot_product_attention and scaled_dot_product_attention_lse accept them
// as follows:
//
//   k, v      one scalar type: float, Eigen::bfloat16 or Eigen::half
//   q         float, or the type of k and v
//   output    q's type (rounded to nearest even from float)
//   lse       float (PartialAttention<Eigen::bfloat16>::lse is a float vector: a bfloat16
//             log-sum-exp, 8 significant bits, would spoil the merge of partial results)
//
// Everything between the inputs and the output is float: the scores, the mask or bias, the online
// softmax, the softmax weights (which are not rounded to the input type before the product with
// v, except on the bfloat16 kernel below) and the accumulation. All-bfloat16 calls on a CPU with
// AVX512_BF16 (the avx512 path, not the decode path's sizes) take kernels/bf16_forward.hpp, whose
// products run on vdpbf16ps: it rounds each softmax weight to bfloat16 for p v (a relative error
// of at most 2^-8 per weight, at most 2^-8 max |v| per output entry), and is otherwise the float
// computation described here, its output rounded once. Everywhere else, the tiled kernel
// (kernels/forward.hpp) reads the 16-bit operands in place and widens them in registers (F16C's
// vcvtph2ps for half, a 16-bit shift for bfloat16; exact) where it copies them anyway: K as it
// packs its panels, V into packed float rows, q as a query tile is loaded, and it rounds the
// output from each finished float row. So a 16-bit call reads half the bytes of a float one and
// has no conversion pass of its own. Calls of a few queries against many keys (the decode path's
// sizes) convert the operands to float once instead (in_compute_type below), O((L + S) d) work;
// calls whose output overlaps an input compute into a temporary. Either way the result (off the
// bfloat16 kernel) is the float attention of the rounded inputs, rounded once to the output type:
// its error against exact arithmetic on the same (rounded) inputs is that of float plus half an
// ulp of the output type.
// A bias mask (attention::bias) holds float biases, the type of the scores. NaN, infinities and
// fully masked rows follow the float policy (scaled_dot_product.hpp): the conversions carry NaN
// and +-inf through unchanged, and a row that sees no key is 0.
//
// Other mixtures (q bfloat16 with k and v half or float, q double with bfloat16 k and v, long
// double with either) are a compile-time error that says what is allowed.

#include <Eigen/Core>
#include <type_traits>

#include "attention/kernels/workspace.hpp"
#include "attention/types.hpp"

namespace attention {

/// True for the low-precision input types, Eigen::bfloat16 and Eigen::half.
template <typename Scalar>
inline constexpr bool is_low_precision_v =
    std::is_same_v<Scalar, Eigen::bfloat16> || std::is_same_v<Scalar, Eigen::half>;

/// The type in which attention over inputs of type Scalar computes its scores, softmax and sums,
/// and returns its log-sum-exp: float for Eigen::bfloat16 and Eigen::half, Scalar otherwise.
template <typename Scalar>
using compute_type_t = std::conditional_t<is_low_precision_v<Scalar>, float, Scalar>;

namespace detail {

/// Float copies of low-precision operands and the float result before its rounding, kept by an
/// AttentionWorkspace so that repeated calls (of the same or smaller sizes) allocate nothing: the
/// buffers only grow.
struct LowPrecisionStaging {
  kernels::Buffer<float> q, k, v, out;
};

/// A rows x cols row-major float matrix in `buffer`, grown to hold it if needed.
inline Eigen::Map<Matrix<float>> staged(kernels::Buffer<float>& buffer, Index rows, Index cols) {
  kernels::grow(buffer, rows * cols);
  return {buffer.data(), rows, cols};
}

/// `x` as float operands: a float matrix or expression itself; a bfloat16 or half one converted
/// (exactly: float holds every bfloat16 and half value) into `buffer`, a view of which is
/// returned.
template <typename Derived>
decltype(auto) float_operand(const Eigen::MatrixBase<Derived>& x, kernels::Buffer<float>& buffer) {
  using Scalar = typename Derived::Scalar;
  if constexpr (std::is_same_v<Scalar, float>) {
    return (x);
  } else {
    static_assert(is_low_precision_v<Scalar>);
    Eigen::Map<Matrix<float>> copy = staged(buffer, x.rows(), x.cols());
    copy = x.template cast<float>();
    return copy;
  }
}

/// out = the float result rounded to out's type (to nearest, ties to even; NaN stays NaN, a value
/// beyond the type's range becomes +-inf, as IEEE rounding does).
template <typename Scalar>
void round_result(const ConstMatrixRef<float>& result, MatrixRef<Scalar> out) {
  out = result.template cast<Scalar>();
}

/// Runs body(q, k, v, out) in the compute type (compute_type_t): on the arguments themselves when
/// q, k and v share one of float, double and long double; for bfloat16 or half k and v, on float
/// views: q (unless float), k and v converted into `staging` (or local buffers when it is null),
/// the float result then rounded into `out` unless out is float already. The copies share no
/// memory with `out`, so an in-place call needs no further temporary (a float q that is `out` is
/// the body's concern, as in any float call).
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Body>
void in_compute_type(const Eigen::MatrixBase<DerivedQ>& q, const Eigen::MatrixBase<DerivedK>& k,
                     const Eigen::MatrixBase<DerivedV>& v, MatrixRef<typename DerivedQ::Scalar> out,
                     LowPrecisionStaging* staging_or_null, Body&& body) {
  using Scalar = typename DerivedQ::Scalar;
  if constexpr (!is_low_precision_v<typename DerivedK::Scalar>) {
    body(q, k, v, out);
  } else {
    LowPrecisionStaging local;
    LowPrecisionStaging& staging = staging_or_null != nullptr ? *staging_or_null : local;
    const ConstMatrixRef<float> q_float(float_operand(q, staging.q));
    const ConstMatrixRef<float> k_float(float_operand(k, staging.k));
    const ConstMatrixRef<float> v_float(float_operand(v, staging.v));
    if constexpr (std::is_same_v<Scalar, float>) {
      body(q_float, k_float, v_float, out);
    } else {
      Eigen::Map<Matrix<float>> result = staged(staging.out, out.rows(), out.cols());
      body(q_float, k_float, v_float, MatrixRef<float>(result));
      round_result<Scalar>(result, out);
    }
  }
}

}  // namespace detail
}  // namespace attention
