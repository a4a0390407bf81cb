// SPDX-License-Identifier: MIT
//
// heads.hpp: scaled_dot_product_attention over heads packed side by side, attention::Heads. Each
// head's columns of the output must equal (bitwise, for float and double: the same kernel tiles
// or chunks compute them) the single-head call on that head's columns, and the long-double
// reference: multi-head, grouped-query and multi-query layouts, the tiled and the decode paths,
// masks and options, views of wider matrices, column-major inputs, long double, any thread count.
// Every shape check throws ShapeError; one message is checked in full.

#include <gtest/gtest.h>

#include <attention/attention.hpp>
#include <limits>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

namespace heads_test {
namespace {

using attention::Heads;
using attention::Index;
namespace ref = support::reference;

template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;

template <typename Scalar>
class PackedHeads : public ::testing::Test {};
using AllScalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(PackedHeads, AllScalars, support::ScalarNames);

/// The per-head promise: the same bits for float and double (the same tiles or chunks compute
/// them); for long double, whose products are Eigen's, the same up to rounding.
template <typename Scalar>
::testing::AssertionResult same_result(const Matrix<Scalar>& a, const Matrix<Scalar>& b) {
  if constexpr (attention::detail::kernels::supported<Scalar>) {
    return support::bitwise_equal(a, b);
  } else {
    return support::is_near(a, b, support::tolerance<Scalar>());
  }
}

/// Error bound against the long-double reference: the kernels' bound for float and double (up to
/// ~1100 keys), the materialising path's for long double.
template <typename Scalar>
long double heads_tolerance() {
  if (std::is_same_v<Scalar, float>) return 1e-5L;
  if (std::is_same_v<Scalar, double>) return 2e-14L;
  return support::tolerance<long double>();
}

/// Checks every head of `out` = attention over packed heads against the single-head call on its
/// columns (bitwise) and the reference.
template <typename Scalar, typename Mask>
void expect_heads_match(const Matrix<Scalar>& q, const Matrix<Scalar>& k, const Matrix<Scalar>& v,
                        const Heads& heads, const Mask& mask, const ref::Mask& ref_mask,
                        const attention::Options& options = {}) {
  const Matrix<Scalar> out = attention::scaled_dot_product_attention(q, k, v, heads, mask, options);
  const Index head_dim = q.cols() / heads.num_heads, d_v = v.cols() / heads.num_kv_heads;
  const Index group = heads.num_heads / heads.num_kv_heads;
  ASSERT_EQ(out.rows(), q.rows());
  ASSERT_EQ(out.cols(), heads.num_heads * d_v);
  for (Index h = 0; h < heads.num_heads; ++h) {
    const Index g = h / group;
    const Matrix<Scalar> alone = attention::scaled_dot_product_attention(
        q.middleCols(h * head_dim, head_dim), k.middleCols(g * head_dim, head_dim),
        v.middleCols(g * d_v, d_v), mask, options);
    EXPECT_TRUE(same_result(Matrix<Scalar>(out.middleCols(h * d_v, d_v)), alone)) << "head " << h;
    const long double scale =
        options.scale ? static_cast<long double>(*options.scale) : ref::default_scale(head_dim);
    const ref::Matrix expected =
        ref::attention(ref::to_real(q.middleCols(h * head_dim, head_dim)),
                       ref::to_real(k.middleCols(g * head_dim, head_dim)),
                       ref::to_real(v.middleCols(g * d_v, d_v)), ref_mask, scale);
    EXPECT_TRUE(support::is_near(out.middleCols(h * d_v, d_v), expected, heads_tolerance<Scalar>()))
        << "head " << h;
  }
}

// Tiled path (L = 70 queries): multi-head, grouped (4 query heads per K/V head) and multi-query,
// with d_v != head_dim.
TYPED_TEST(PackedHeads, EveryLayoutMatchesTheSingleHeadCalls) {
  using Scalar = TypeParam;
  const Index L = 70, S = 90, head_dim = 16, d_v = 12;
  for (const Heads heads : {Heads(4), Heads(8, 2), Heads(4, 1)}) {
    const Matrix<Scalar> q = support::random_matrix<Scalar>(L, heads.num_heads * head_dim, 1);
    const Matrix<Scalar> k = support::random_matrix<Scalar>(S, heads.num_kv_heads * head_dim, 2);
    const Matrix<Scalar> v = support::random_matrix<Scalar>(S, heads.num_kv_heads * d_v, 3);
    expect_heads_match(q, k, v, heads, attention::NoMask{}, ref::Mask::none());
    expect_heads_match(q, k, v, heads, attention::causal, ref::Mask::causal());
  }
}

// Decode path (a few queries against >= 512 keys): a decoder's step over a cache, GQA.
TYPED_TEST(PackedHeads, DecodeStepMatchesTheSingleHeadCalls) {
  using Scalar = TypeParam;
  const Index S = 1100, head_dim = 32;
  const Heads heads(8, 2);
  for (const Index L : {1, 3}) {
    const Matrix<Scalar> q = support::random_matrix<Scalar>(L, 8 * head_dim, 10);
    const Matrix<Scalar> k = support::random_matrix<Scalar>(S, 2 * head_dim, 11);
    const Matrix<Scalar> v = support::random_matrix<Scalar>(S, 2 * head_dim, 12);
    expect_heads_match(q, k, v, heads, attention::NoMask{}, ref::Mask::none());
    expect_heads_match(q, k, v, heads, attention::causal_lower_right,
                       ref::Mask::causal_lower_right());
  }
}

// Attention over a float or double cache (cache_attention.hpp) is the packed heads over its rows,
// lower-right causal by default (or under the mask given): the same bits (the same path), whose
// agreement with the reference the tests above assert.
TEST(PackedHeadsOverACache, FloatAndDoubleCachesAreThePackedHeadsOverTheirRows) {
  const Index S = 600, head_dim = 16;
  const Heads heads(4, 2);
  attention::KVCache<float> floats(2 * head_dim, S);
  attention::KVCache<double> doubles(2 * head_dim, S);
  floats.append(support::random_matrix<float>(S, 2 * head_dim, 13),
                support::random_matrix<float>(S, 2 * head_dim, 14));
  doubles.append(floats.keys().cast<double>(), floats.values().cast<double>());
  for (const Index L : {1, 20}) {
    const Matrix<float> q = support::random_matrix<float>(L, 4 * head_dim, 15);
    EXPECT_TRUE(support::bitwise_equal(
        attention::scaled_dot_product_attention(q, floats, heads),
        attention::scaled_dot_product_attention(q, floats.keys(), floats.values(), heads,
                                                attention::causal_lower_right)));
    const Matrix<double> q_double = q.cast<double>();
    EXPECT_TRUE(support::bitwise_equal(
        attention::scaled_dot_product_attention(q_double, doubles, heads, attention::NoMask{}),
        attention::scaled_dot_product_attention(q_double, doubles.keys(), doubles.values(),
                                                heads)));
  }
}

// A keep mask shared by all heads, a scale override and a soft-cap.
TYPED_TEST(PackedHeads, MaskAndOptionsApplyToEveryHead) {
  using Scalar = TypeParam;
  const Index L = 40, S = 60, head_dim = 8;
  const Heads heads(6, 3);
  const Matrix<Scalar> q = support::random_matrix<Scalar>(L, 6 * head_dim, 20);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(S, 3 * head_dim, 21);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(S, 3 * head_dim, 22);
  support::BoolMatrix visible = support::random_keep(L, S, 23, 0.6);
  visible.row(7).setConstant(false);  // a query that sees no key: zeros in every head
  expect_heads_match(q, k, v, heads, attention::keep(visible), ref::Mask::keep(visible),
                     attention::Options{0.3});
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(q, k, v, heads, attention::keep(visible));
  EXPECT_TRUE((out.row(7).array() == Scalar(0)).all());
  // Soft-cap: against the single-head calls only (the reference has no cap here).
  attention::Options capped;
  capped.softcap = 2.0;
  const Matrix<Scalar> with_cap =
      attention::scaled_dot_product_attention(q, k, v, heads, attention::causal, capped);
  for (Index h = 0; h < 6; ++h) {
    const Matrix<Scalar> alone = attention::scaled_dot_product_attention(
        q.middleCols(h * head_dim, head_dim), k.middleCols(h / 2 * head_dim, head_dim),
        v.middleCols(h / 2 * head_dim, head_dim), attention::causal, capped);
    EXPECT_TRUE(same_result(Matrix<Scalar>(with_cap.middleCols(h * head_dim, head_dim)), alone));
  }
}

// Views of wider matrices (a KVCache's keys() and values(), a block of an output) and a
// column-major q give the same result; nothing outside `out`'s view is written.
TYPED_TEST(PackedHeads, ViewsAndColumnMajorInputs) {
  using Scalar = TypeParam;
  const Index L = 33, S = 50, head_dim = 8;
  const Heads heads(4, 2);
  const Matrix<Scalar> wide = support::random_matrix<Scalar>(S, 3 * 2 * head_dim, 30);
  const Matrix<Scalar> q = support::random_matrix<Scalar>(L, 4 * head_dim, 31);
  const auto k = wide.middleCols(0, 2 * head_dim);
  const auto v = wide.middleCols(2 * head_dim, 2 * head_dim);
  const Matrix<Scalar> expected = attention::scaled_dot_product_attention(
      q, Matrix<Scalar>(k), Matrix<Scalar>(v), heads, attention::causal);
  Matrix<Scalar> out_wide = Matrix<Scalar>::Zero(L, 6 * head_dim);
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> q_col_major = q;
  attention::scaled_dot_product_attention(
      q_col_major, k, v, heads, out_wide.middleCols(head_dim, 4 * head_dim), attention::causal);
  EXPECT_TRUE(same_result(Matrix<Scalar>(out_wide.middleCols(head_dim, 4 * head_dim)), expected));
  EXPECT_TRUE((out_wide.leftCols(head_dim).array() == Scalar(0)).all());
  EXPECT_TRUE((out_wide.rightCols(head_dim).array() == Scalar(0)).all());
}

// One workspace serves calls of different sizes (growing, then shrinking) with the right results.
TYPED_TEST(PackedHeads, WorkspaceReusedAcrossCalls) {
  using Scalar = TypeParam;
  attention::AttentionWorkspace<Scalar> workspace;
  for (const Index S : {600, 40, 1000}) {
    const Matrix<Scalar> q = support::random_matrix<Scalar>(1, 4 * 16, 40);
    const Matrix<Scalar> k = support::random_matrix<Scalar>(S, 2 * 16, 41);
    const Matrix<Scalar> v = support::random_matrix<Scalar>(S, 2 * 16, 42);
    Matrix<Scalar> out(1, 4 * 16);
    attention::scaled_dot_product_attention(q, k, v, Heads(4, 2), out, workspace);
    EXPECT_TRUE(same_result(out, attention::scaled_dot_product_attention(q, k, v, Heads(4, 2))))
        << "S = " << S;
  }
}

// In-place self-attention over packed heads: x = attention(x, x, x) reads every row of x while
// writing x, so it must go through a temporary and give the out-of-place result.
TYPED_TEST(PackedHeads, OutputMayBeAnInput) {
  using Scalar = TypeParam;
  const Matrix<Scalar> x0 = support::random_matrix<Scalar>(45, 4 * 8, 60);
  const Matrix<Scalar> expected =
      attention::scaled_dot_product_attention(x0, x0, x0, Heads(4), attention::causal);
  Matrix<Scalar> x = x0;
  attention::scaled_dot_product_attention(x, x, x, Heads(4), x, attention::causal);
  EXPECT_TRUE(same_result(x, expected));
}

TYPED_TEST(PackedHeads, BitwiseIdenticalForAnyThreadCount) {
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP";
#endif
  using Scalar = TypeParam;
  if constexpr (!attention::detail::kernels::supported<Scalar>) {
    GTEST_SKIP() << "long double: Eigen's products, whose blocking follows the thread count";
  }
  const Heads heads(8, 2);
  for (const Index L : {1, 100}) {
    const Matrix<Scalar> q = support::random_matrix<Scalar>(L, 8 * 16, 50);
    const Matrix<Scalar> k = support::random_matrix<Scalar>(700, 2 * 16, 51);
    const Matrix<Scalar> v = support::random_matrix<Scalar>(700, 2 * 16, 52);
    Matrix<Scalar> one, two, three;
    support::with_threads(1,
                          [&] { one = attention::scaled_dot_product_attention(q, k, v, heads); });
    support::with_threads(2,
                          [&] { two = attention::scaled_dot_product_attention(q, k, v, heads); });
    support::with_threads(3,
                          [&] { three = attention::scaled_dot_product_attention(q, k, v, heads); });
    EXPECT_TRUE(support::bitwise_equal(one, two)) << "L = " << L;
    EXPECT_TRUE(support::bitwise_equal(one, three)) << "L = " << L;
  }
}

TEST(PackedHeadsShapes, EveryMismatchThrows) {
  const Matrix<float> q = Matrix<float>::Ones(4, 32), k = Matrix<float>::Ones(6, 16);
  const Matrix<float> v = Matrix<float>::Ones(6, 16);
  using attention::scaled_dot_product_attention;
  using attention::ShapeError;
  EXPECT_NO_THROW((void)scaled_dot_product_attention(q, k, v, Heads(4, 2)));
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, v, Heads(0, 1)), ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, v, Heads(4, 0)), ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, v, Heads(4, 3)), ShapeError);  // 3 ∤ 4
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, v, Heads(5, 1)), ShapeError);  // 5 ∤ 32
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, v, Heads(4, 4)), ShapeError);  // k 4 x 8
  EXPECT_THROW((void)scaled_dot_product_attention(q, Matrix<float>::Ones(6, 24), v, Heads(4, 2)),
               ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, Matrix<float>::Ones(5, 16), Heads(4, 2)),
               ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, Matrix<float>::Ones(6, 15), Heads(4, 2)),
               ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(Matrix<float>(0, 32), k, v, Heads(4, 2)),
               ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(q, Matrix<float>(0, 16), Matrix<float>(0, 16),
                                                  Heads(4, 2)),
               ShapeError);
  Matrix<float> out(4, 31);
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, Heads(4, 2), out), ShapeError);
  Matrix<float> tall(5, 32);
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, Heads(4, 2), tall), ShapeError);
  EXPECT_THROW((void)scaled_dot_product_attention(q, k, v, Heads(4, 2),
                                                  attention::keep(support::BoolMatrix(4, 5))),
               ShapeError);
}

TEST(PackedHeadsShapes, MessageNamesTheHeadCountsAndWidths) {
  const Matrix<float> q = Matrix<float>::Ones(4, 32), k = Matrix<float>::Ones(6, 24);
  const Matrix<float> v = Matrix<float>::Ones(6, 16);
  EXPECT_EQ(support::message_of<attention::ShapeError>(
                [&] { (void)attention::scaled_dot_product_attention(q, k, v, Heads(4, 2)); }),
            "attention::scaled_dot_product_attention: k.cols() (= 24) must equal "
            "heads.num_kv_heads * head_dim (= 16)");
}

}  // namespace
}  // namespace heads_test
