// SPDX-License-Identifier: MIT
//
// kernels/decode_kernels.hpp against naive loops: decode_scores (dot products along d, with a
// scalar tail past the last whole vector; on every path this CPU runs) and decode_values (4 rows
// x 4, 1 or a tail of columns), which add to what o holds; the rows asked for ahead change
// nothing. Also compiled for the build machine (tests/CMakeLists.txt).

#include <gtest/gtest.h>

#include <attention/isa.hpp>
#include <attention/kernels/decode_kernels.hpp>
#include <cstddef>
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

}  // namespace
