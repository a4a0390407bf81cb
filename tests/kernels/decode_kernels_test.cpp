// SPDX-License-Identifier: MIT
//
// kernels/decode_kernels.hpp against naive loops: decode_scores (dot products along d, with a
// scalar tail past the last whole vector; on every path this CPU runs) and decode_values (4 rows
// x 4, 1 or a tail of columns), which add to what o holds; the rows asked for ahead change
// nothing. Also compiled for the build machine (tests/CMakeLists.txt).

#include <gtest/gtest.h>

#include <attention/isa.hpp>
#include <attention/kernels/decode_kernels.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
namespace kernels = attention::detail::kernels;

template <typename Scalar>
class DecodeKernels : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(DecodeKernels, FastScalars, support::ScalarNames);

template <typename Scalar>
using Matrix = support::RowMatrix<Scalar>;
template <typename Scalar>
using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

using support::product_tolerance;

/// s(r, j) = q_r . k_j for 8 query rows (d_padded apart, zero past d) and 13 keys whose rows are
/// ldk > d apart, d with and without a tail, by `scores` (one path's decode_scores, whose vectors
/// hold w Scalars and whose RowsAhead type is Ahead).
template <typename Scalar, typename Ahead, typename Scores>
void expect_scores_are_dot_products(Scores scores, Index w) {
  for (const Index d : {Index{1}, w, 2 * w + 3, Index{37}, Index{128}}) {
    const Index d_padded = kernels::round_up(d, w), rows = 8, cols = 13, ldk = d + 5, lds = 16;
    const Matrix<Scalar> q = support::random_matrix<Scalar>(rows, d, 1 + static_cast<unsigned>(d));
    const Matrix<Scalar> k =
        support::random_matrix<Scalar>(cols, ldk, 2 + static_cast<unsigned>(d));
    // The query rows aligned to a vector (64 bytes on AVX-512, more than Eigen's default).
    std::vector<Scalar> q_storage(static_cast<std::size_t>(rows * d_padded + 64), Scalar(0));
    void* q_start = q_storage.data();
    std::size_t space = q_storage.size() * sizeof(Scalar);
    Scalar* const q_rows = static_cast<Scalar*>(std::align(64, 1, q_start, space));
    for (Index r = 0; r < rows; ++r) {
      for (Index t = 0; t < d; ++t) q_rows[r * d_padded + t] = q(r, t);
    }
    Buffer<Scalar> s = Buffer<Scalar>::Constant(rows * lds, Scalar(99));
    const Ahead ahead{k.data(), ldk, d, cols};
    scores(q_rows, rows, d_padded, d, k.data(), ldk, cols, s.data(), lds, ahead,
           kernels::GroupScales{});
    for (Index r = 0; r < rows; ++r) {
      for (Index j = 0; j < lds; ++j) {
        if (j >= cols) {
          EXPECT_EQ(s(r * lds + j), Scalar(99)) << "wrote past the keys";
          continue;
        }
        long double expected = 0;
        for (Index t = 0; t < d; ++t) expected += static_cast<long double>(q(r, t)) * k(j, t);
        EXPECT_NEAR(s(r * lds + j), expected, product_tolerance<Scalar>(d))
            << "w " << w << ", d " << d << ", r " << r << ", j " << j;
      }
    }
  }
}

// The scores on every path this CPU runs: 13 keys are blocks of 4 keys and a single key on
// AVX-512 (summed across lanes together), 6 pairs and a single key elsewhere.
TYPED_TEST(DecodeKernels, ScoresAreDotProductsAlongD) {
  using Scalar = TypeParam;
  expect_scores_are_dot_products<Scalar, kernels::RowsAhead<Scalar>>(
      &kernels::decode_scores<Scalar, Scalar>, kernels::Simd<Scalar>::width);
#if ATTENTION_HAS_DISPATCH
  if (attention::isa_available(attention::Isa::avx2)) {
    SCOPED_TRACE("avx2");
    expect_scores_are_dot_products<Scalar, kernels::avx2::RowsAhead<Scalar>>(
        &kernels::avx2::decode_scores<Scalar, Scalar>, kernels::avx2::Simd<Scalar>::width);
  }
  if (attention::isa_available(attention::Isa::avx512)) {
    SCOPED_TRACE("avx512");
    expect_scores_are_dot_products<Scalar, kernels::avx512::RowsAhead<Scalar>>(
        &kernels::avx512::decode_scores<Scalar, Scalar>, kernels::avx512::Simd<Scalar>::width);
  }
#endif
}

// o += p v for 8 rows, widths that use the 4-vector blocks, the 1-vector blocks and a scalar tail.
TYPED_TEST(DecodeKernels, ValuesAddTheWeightedRowsToTheAccumulator) {
  using Scalar = TypeParam;
  constexpr Index w = kernels::Simd<Scalar>::width;
  for (const Index d_v : {Index{3}, 4 * w, 5 * w + 2, Index{37}}) {
    const Index rows = 8, n = 11, ldp = 16, ldv = d_v + 3;
    const Index ldo = kernels::round_up(d_v, w);
    const Matrix<Scalar> p =
        support::random_matrix<Scalar>(rows, ldp, 3 + static_cast<unsigned>(d_v));
    const Matrix<Scalar> v = support::random_matrix<Scalar>(n, ldv, 4 + static_cast<unsigned>(d_v));
    const Matrix<Scalar> start = support::random_matrix<Scalar>(rows, ldo, 5);
    Buffer<Scalar> o = Eigen::Map<const Buffer<Scalar>>(start.data(), rows * ldo);
    const kernels::RowsAhead<Scalar> ahead{v.data(), ldv, d_v, n};
    kernels::decode_values(p.data(), ldp, rows, v.data(), ldv, n, d_v, o.data(), ldo, ahead);
    for (Index r = 0; r < rows; ++r) {
      for (Index x = 0; x < ldo; ++x) {
        if (x >= d_v) {
          EXPECT_EQ(o(r * ldo + x), start(r, x)) << "changed a padding column";
          continue;
        }
        long double expected = start(r, x);
        for (Index j = 0; j < n; ++j) expected += static_cast<long double>(p(r, j)) * v(j, x);
        EXPECT_NEAR(o(r * ldo + x), expected, product_tolerance<Scalar>(n + 1))
            << "d_v " << d_v << ", r " << r << ", x " << x;
      }
    }
  }
}

/// o += p (s v) for int8 rows v with one scale s_j per row (an Int8KVCache's head within one
/// group) by `values` (one path's decode_values, whose vectors hold w floats and whose RowsAhead
/// type is Ahead), 8 rows and a step's 16 keys, widths with 4-vector and 1-vector blocks and a
/// scalar tail. The kernel forms the weights p_rj s_j (one rounding) and sums n + 1 terms (v's
/// entries widen exactly), so each entry is within (n + 2) u sum |terms| (u = 2^-24, to first
/// order; n + 3 below) of the long-double sum.
template <typename Ahead, typename Values>
void expect_int8_values_are_scaled_products(Values values, Index w) {
  using Int8Matrix = Eigen::Matrix<std::int8_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  constexpr long double u = std::numeric_limits<float>::epsilon() / 2;
  for (const Index d_v : {Index{128}, Index{4} * w + Index{5}, Index{37}}) {
    const Index rows = 8, n = kernels::decode_values_max_keys, ldp = 16, ldv = d_v + 5;
    const Index ldo = kernels::round_up(d_v, w);
    const auto seed = static_cast<unsigned>(d_v);
    const Matrix<float> p = support::random_matrix<float>(rows, ldp, 20 + seed);
    // Entries in [-127, 127]: a float outside int8's range would make the cast undefined.
    const Int8Matrix v =
        (support::random_uniform<float>(n, ldv, 21 + seed, -1.0, 1.0).array() * 127.0f)
            .round()
            .cast<std::int8_t>();
    // s_j in [0.5, 1] / 127: entries of v s up to 1 in magnitude.
    const Buffer<float> scales =
        (support::random_matrix<float>(n, 1, 22 + seed).array().abs() * 0.5f + 0.5f) / 127.0f;
    const Matrix<float> start = support::random_matrix<float>(rows, ldo, 23 + seed);
    // o aligned to 64 bytes, as the kernels' vector stores ask on AVX-512.
    std::vector<float> o_storage(static_cast<std::size_t>(rows * ldo + 16));
    void* o_start = o_storage.data();
    std::size_t space = o_storage.size() * sizeof(float);
    Eigen::Map<Buffer<float>> o(static_cast<float*>(std::align(64, 1, o_start, space)), rows * ldo);
    o = Eigen::Map<const Buffer<float>>(start.data(), rows * ldo);
    const Ahead ahead{v.data(), ldv, d_v, n};
    values(p.data(), ldp, rows, v.data(), ldv, n, d_v, o.data(), ldo, ahead,
           kernels::GroupScales{scales.data(), 1, d_v, 0});
    for (Index r = 0; r < rows; ++r) {
      for (Index x = 0; x < ldo; ++x) {
        if (x >= d_v) {
          EXPECT_EQ(o(r * ldo + x), start(r, x)) << "changed a padding column";
          continue;
        }
        long double expected = start(r, x), magnitude = std::fabs(expected);
        for (Index j = 0; j < n; ++j) {
          const long double term = static_cast<long double>(p(r, j)) * scales(j) * v(j, x);
          expected += term;
          magnitude += std::fabs(term);
        }
        EXPECT_NEAR(o(r * ldo + x), expected, static_cast<long double>(n + 3) * u * magnitude)
            << "w " << w << ", d_v " << d_v << ", r " << r << ", x " << x;
      }
    }
  }
}

// Int8 values with one scale per row, on every path this CPU runs.
TEST(DecodeKernelsInt8, ValuesWithOneScalePerRowAreTheScaledProduct) {
  expect_int8_values_are_scaled_products<kernels::RowsAhead<std::int8_t>>(
      &kernels::decode_values<float, std::int8_t>, kernels::Simd<float>::width);
#if ATTENTION_HAS_DISPATCH
  if (attention::isa_available(attention::Isa::avx2)) {
    SCOPED_TRACE("avx2");
    expect_int8_values_are_scaled_products<kernels::avx2::RowsAhead<std::int8_t>>(
        &kernels::avx2::decode_values<float, std::int8_t>, kernels::avx2::Simd<float>::width);
  }
  if (attention::isa_available(attention::Isa::avx512)) {
    SCOPED_TRACE("avx512");
    expect_int8_values_are_scaled_products<kernels::avx512::RowsAhead<std::int8_t>>(
        &kernels::avx512::decode_values<float, std::int8_t>, kernels::avx512::Simd<float>::width);
  }
#endif
}

}  // namespace
