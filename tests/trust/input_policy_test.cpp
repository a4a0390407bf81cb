// SPDX-License-Identifier: MIT
//
// Input policy: what every entry point does with inputs at the edge of its domain. Each test names
// the documented rule it checks (doc comments in the headers):
//   softmax.hpp            NaN or +inf in a row -> that row NaN; an all -inf row -> zeros
//   mask.hpp               a row with no visible key -> weights 0 and output 0, never NaN; a masked
//                          weight is exactly 0; a +inf or NaN bias -> that query's row NaN
//   scaled_dot_product.hpp NaN or inf in row i of q -> only row i affected; NaN or inf in k or v
//                          reaches the queries that can see that key; zero sizes -> ShapeError;
//                          non-finite scale -> std::invalid_argument
//   options.hpp            scale 0 -> uniform weights over the visible keys; negative scale
//                          reverses preferences; NaN / inf rejected
//   multi_head.hpp         num_heads >= 1 must divide d_model >= 1, else ShapeError
// float and double run the tiled kernel (kernels/flash.hpp) in scaled_dot_product_attention; long
// double and attention_weights run the materialising path. Sizes span several tiles of the kernel
// (detail::flash::Geometry) and are not multiples of them.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include "attention/attention.hpp"
#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/scalars.hpp"
#include "trust/trust_support.hpp"

namespace input_policy_test {
namespace {

namespace ref = support::reference;
using attention::Index;
template <typename Scalar>
using Mat = attention::Matrix<Scalar>;
using BoolMat = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

constexpr Index num_queries = 70;  // two query tiles of 48 (16 vector registers) or of 64 (AVX-512)
constexpr Index num_keys = 45;
constexpr Index d_k = 24;
constexpr Index d_v = 12;

template <typename Scalar>
constexpr Scalar nan_v = std::numeric_limits<Scalar>::quiet_NaN();
template <typename Scalar>
constexpr Scalar inf_v = std::numeric_limits<Scalar>::infinity();

template <typename Scalar>
struct Inputs {
  Mat<Scalar> q = support::random_matrix<Scalar>(num_queries, d_k, 11);
  Mat<Scalar> k = support::random_matrix<Scalar>(num_keys, d_k, 12);
  Mat<Scalar> v = support::random_matrix<Scalar>(num_keys, d_v, 13);
};

template <typename Scalar>
class InputPolicy : public ::testing::Test {};
TYPED_TEST_SUITE(InputPolicy, support::AllScalars, support::ScalarNames);

// ---- NaN and inf in q
// ----------------------------------------------------------------------------

// scaled_dot_product.hpp: "a NaN or inf in row i of q makes only row i of the output NaN".
TYPED_TEST(InputPolicy, NanInOneQueryRowStaysInThatRow) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  const Mat<Scalar> clean = attention::scaled_dot_product_attention(in.q, in.k, in.v);
  const Mat<Scalar> clean_causal =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  const Mat<Scalar> clean_weights = attention::attention_weights(in.q, in.k);
  for (const Index row : {Index(0), Index(5), Index(33), Index(69)}) {
    SCOPED_TRACE("NaN in q row " + std::to_string(row));
    Mat<Scalar> q = in.q;
    q(row, 3) = nan_v<Scalar>;
    const Mat<Scalar> out = attention::scaled_dot_product_attention(q, in.k, in.v);
    const Mat<Scalar> out_causal =
        attention::scaled_dot_product_attention(q, in.k, in.v, attention::causal);
    const Mat<Scalar> weights = attention::attention_weights(q, in.k);
    EXPECT_TRUE(trust::row_all_nan(out, row));
    EXPECT_TRUE(trust::row_all_nan(out_causal, row));
    EXPECT_TRUE(trust::row_all_nan(weights, row));
    Mat<Scalar> out_rest = out, clean_rest = clean;
    out_rest.row(row).setZero();
    clean_rest.row(row).setZero();
    EXPECT_TRUE(trust::identical(out_rest, clean_rest));
    Mat<Scalar> causal_rest = out_causal, clean_causal_rest = clean_causal;
    causal_rest.row(row).setZero();
    clean_causal_rest.row(row).setZero();
    EXPECT_TRUE(trust::identical(causal_rest, clean_causal_rest));
    Mat<Scalar> weights_rest = weights, clean_weights_rest = clean_weights;
    weights_rest.row(row).setZero();
    clean_weights_rest.row(row).setZero();
    EXPECT_TRUE(trust::identical(weights_rest, clean_weights_rest));
  }
}

// +inf in q(i, c), with k's column c of both signs: row i's scores include +inf, so its softmax is
// NaN (inf - inf), and no other row changes.
TYPED_TEST(InputPolicy, InfInOneQueryRowStaysInThatRow) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  const Mat<Scalar> clean = attention::scaled_dot_product_attention(in.q, in.k, in.v);
  for (const Scalar value : {inf_v<Scalar>, -inf_v<Scalar>}) {
    Mat<Scalar> q = in.q;
    q(40, 3) = value;
    const Mat<Scalar> out = attention::scaled_dot_product_attention(q, in.k, in.v);
    EXPECT_TRUE(trust::row_all_nan(out, 40));
    Mat<Scalar> out_rest = out, clean_rest = clean;
    out_rest.row(40).setZero();
    clean_rest.row(40).setZero();
    EXPECT_TRUE(trust::identical(out_rest, clean_rest));
  }
}

// The corner the sentence "makes row i NaN" does not cover: if +inf in q(i, c) meets a column c of
// k that is negative for every key, every score of row i is -inf, and the row is treated like a row
// with no visible key: weights 0 and output 0, not NaN. Both paths agree.
TYPED_TEST(InputPolicy, InfInQueryWithAllScoresMinusInfGivesZeroRow) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  in.k.col(3) = -in.k.col(3).cwiseAbs() - Mat<Scalar>::Constant(num_keys, 1, Scalar(0.5));
  Mat<Scalar> q = in.q;
  q(40, 3) = inf_v<Scalar>;
  const Mat<Scalar> out = attention::scaled_dot_product_attention(q, in.k, in.v);
  const Mat<Scalar> weights = attention::attention_weights(q, in.k);
  EXPECT_TRUE(trust::identical(out.row(40), Mat<Scalar>::Zero(1, d_v)));
  EXPECT_TRUE(trust::identical(weights.row(40), Mat<Scalar>::Zero(1, num_keys)));
}

// ---- NaN and inf in k and v
// ----------------------------------------------------------------------

// "a NaN or inf in k reaches every query that can see that key": with the causal mask, key 40 is
// seen by queries 40..69 only; the others are bitwise unchanged.
TYPED_TEST(InputPolicy, NanInKeyReachesOnlyQueriesThatSeeIt) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  const Mat<Scalar> clean =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  Mat<Scalar> k = in.k;
  k(40, 5) = nan_v<Scalar>;
  const Mat<Scalar> out = attention::scaled_dot_product_attention(in.q, k, in.v, attention::causal);
  for (Index i = 40; i < num_queries; ++i) EXPECT_TRUE(trust::row_all_nan(out, i)) << "row " << i;
  EXPECT_TRUE(trust::identical(out.topRows(40), clean.topRows(40)));
  const Mat<Scalar> weights = attention::attention_weights(in.q, k, attention::causal);
  for (Index i = 40; i < num_queries; ++i)
    EXPECT_TRUE(trust::row_all_nan(weights, i)) << "row " << i;
  EXPECT_TRUE(
      trust::identical(weights.topRows(40),
                       attention::attention_weights(in.q, in.k, attention::causal).topRows(40)));
}

// An infinite key entry makes every score with that key infinite: +inf makes the row NaN, -inf
// hides the key. Queries that cannot see the key do not change.
TYPED_TEST(InputPolicy, InfInKeyReachesOnlyQueriesThatSeeIt) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  const Mat<Scalar> clean =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  Mat<Scalar> k = in.k;
  k(40, 5) = inf_v<Scalar>;
  const Mat<Scalar> out = attention::scaled_dot_product_attention(in.q, k, in.v, attention::causal);
  EXPECT_TRUE(trust::identical(out.topRows(40), clean.topRows(40)));
  for (Index i = 40; i < num_queries; ++i) {
    if (in.q(i, 5) > 0) {
      EXPECT_TRUE(trust::row_all_nan(out, i)) << "row " << i;
    } else if (in.q(i, 5) < 0) {
      EXPECT_TRUE(trust::row_all_finite(out, i)) << "row " << i;
    }
  }
}

// "a NaN or inf in v reaches every query that can see that key": v(40, c) = NaN makes column c NaN
// for the queries that see key 40 (40..69 under the causal mask); the queries that cannot see it,
// whose weight for key 40 is exactly 0, keep their output.
TYPED_TEST(InputPolicy, NonFiniteValueReachesOnlyQueriesThatSeeIt) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  const Mat<Scalar> clean =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  for (const Scalar value : {nan_v<Scalar>, inf_v<Scalar>}) {
    SCOPED_TRACE(value);
    Mat<Scalar> v = in.v;
    v(40, 2) = value;
    const Mat<Scalar> out =
        attention::scaled_dot_product_attention(in.q, in.k, v, attention::causal);
    for (Index i = 40; i < num_queries; ++i) {
      EXPECT_FALSE(std::isfinite(out(i, 2))) << "row " << i;
      EXPECT_EQ(trust::nan_count(out, i), std::isnan(value) ? 1 : 0) << "row " << i;
    }
    // Queries 0..39 cannot see key 40: their weight for it is exactly 0 and adds nothing. (Not
    // bitwise: with a non-finite value present the kernel sums p v in another order.)
    EXPECT_TRUE(out.topRows(40).allFinite());
    EXPECT_TRUE(support::is_near(out.topRows(40), clean.topRows(40), support::tolerance<Scalar>()));
    // Every entry against the long-double reference on the same inputs, whose p v skips weights of
    // exactly 0 (the documented rule): column 2 of rows 40..69 non-finite as the value (NaN stays
    // NaN; +inf times a positive weight is +inf), the other columns of those rows finite and near.
    ref::Matrix rv = ref::to_real(in.v);
    rv(40, 2) = static_cast<ref::Real>(value);
    EXPECT_TRUE(support::is_near(
        out, ref::attention(ref::to_real(in.q), ref::to_real(in.k), rv, ref::Mask::causal()),
        support::tolerance<Scalar>()));
  }
}

// mask.hpp: "A query row with no visible key ... gets all weights 0 and output 0, never NaN", even
// when a value it cannot see is NaN.
TYPED_TEST(InputPolicy, FullyMaskedRowIsZeroEvenWithNanValues) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  BoolMat keep = BoolMat::Constant(num_queries, num_keys, true);
  keep.row(3).setConstant(false);
  keep.row(50).setConstant(false);
  Mat<Scalar> v = in.v;
  v(10, 4) = nan_v<Scalar>;
  const Mat<Scalar> out =
      attention::scaled_dot_product_attention(in.q, in.k, v, attention::keep(keep));
  const Mat<Scalar> weights = attention::attention_weights(in.q, in.k, attention::keep(keep));
  EXPECT_TRUE(trust::identical(weights.row(3), Mat<Scalar>::Zero(1, num_keys)));
  EXPECT_TRUE(trust::identical(out.row(3), Mat<Scalar>::Zero(1, d_v)));
  EXPECT_TRUE(trust::identical(out.row(50), Mat<Scalar>::Zero(1, d_v)));
}

// ---- Infinite and NaN biases
// ---------------------------------------------------------------------

// mask.hpp: "-inf hides the key": weight exactly 0, and the row equals the keep mask hiding it.
TYPED_TEST(InputPolicy, MinusInfBiasHidesTheKey) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  Mat<Scalar> bias = Mat<Scalar>::Zero(num_queries, num_keys);
  BoolMat keep = BoolMat::Constant(num_queries, num_keys, true);
  bias(5, 7) = -inf_v<Scalar>;
  keep(5, 7) = false;
  bias.row(60).setConstant(-inf_v<Scalar>);  // a fully hidden row
  keep.row(60).setConstant(false);
  const Mat<Scalar> weights = attention::attention_weights(in.q, in.k, attention::bias(bias));
  EXPECT_TRUE(trust::same_bits(weights(5, 7), Scalar(0)));
  EXPECT_NEAR(static_cast<double>(support::row_sums(weights)(5)), 1.0, 1e-6);
  EXPECT_TRUE(trust::identical(weights.row(60), Mat<Scalar>::Zero(1, num_keys)));
  const Mat<Scalar> out =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(bias));
  const Mat<Scalar> out_keep =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(keep));
  EXPECT_TRUE(support::is_near(out, out_keep, support::tolerance<Scalar>()));
  EXPECT_TRUE(trust::identical(out.row(60), Mat<Scalar>::Zero(1, d_v)));
}

// mask.hpp: "A +inf or NaN bias makes that query's row NaN"; other rows do not change.
TYPED_TEST(InputPolicy, PlusInfOrNanBiasMakesOnlyThatRowNan) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  const Mat<Scalar> zero_bias = Mat<Scalar>::Zero(num_queries, num_keys);
  const Mat<Scalar> clean =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(zero_bias));
  const Mat<Scalar> clean_weights =
      attention::attention_weights(in.q, in.k, attention::bias(zero_bias));
  for (const Scalar value : {inf_v<Scalar>, nan_v<Scalar>}) {
    SCOPED_TRACE(value);
    Mat<Scalar> bias = zero_bias;
    bias(5, 7) = value;
    bias(37, 44) = value;
    const Mat<Scalar> out =
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(bias));
    const Mat<Scalar> weights = attention::attention_weights(in.q, in.k, attention::bias(bias));
    for (const Index row : {Index(5), Index(37)}) {
      EXPECT_TRUE(trust::row_all_nan(out, row)) << "row " << row;
      EXPECT_TRUE(trust::row_all_nan(weights, row)) << "row " << row;
    }
    Mat<Scalar> out_rest = out, clean_rest = clean, weights_rest = weights,
                clean_weights_rest = clean_weights;
    for (const Index row : {Index(5), Index(37)}) {
      out_rest.row(row).setZero();
      clean_rest.row(row).setZero();
      weights_rest.row(row).setZero();
      clean_weights_rest.row(row).setZero();
    }
    EXPECT_TRUE(trust::identical(out_rest, clean_rest));
    EXPECT_TRUE(trust::identical(weights_rest, clean_weights_rest));
  }
}

// ---- Scale
// ---------------------------------------------------------------------------------------

// options.hpp: "Zero gives uniform weights over the visible keys".
TYPED_TEST(InputPolicy, ZeroScaleGivesUniformWeightsOverVisibleKeys) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  attention::Options options;
  options.scale = 0.0;
  const Mat<Scalar> weights = attention::attention_weights(in.q, in.k, attention::causal, options);
  const Mat<Scalar> out =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal, options);
  const Mat<Scalar> out_full =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, {}, options);
  Mat<Scalar> expected_weights = Mat<Scalar>::Zero(num_queries, num_keys);
  Mat<Scalar> expected_out(num_queries, d_v);
  for (Index i = 0; i < num_queries; ++i) {
    const Index visible = std::min(i + 1, num_keys);
    expected_weights.row(i).head(visible).setConstant(Scalar(1) / static_cast<Scalar>(visible));
    expected_out.row(i) = in.v.topRows(visible).colwise().sum() / static_cast<Scalar>(visible);
  }
  EXPECT_TRUE(support::is_near(weights, expected_weights, support::tolerance<Scalar>()));
  EXPECT_TRUE(support::is_near(out, expected_out, 4 * support::tolerance<Scalar>()));
  const Mat<Scalar> mean = in.v.colwise().mean().replicate(num_queries, 1);
  EXPECT_TRUE(support::is_near(out_full, mean, 4 * support::tolerance<Scalar>()));
}

// options.hpp: "a negative scale reverses preferences": scale -c on q equals scale c on -q, bit for
// bit (negation is exact, and so is every product and sum with a negated operand).
TYPED_TEST(InputPolicy, NegativeScaleEqualsNegatedQueries) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  attention::Options negative, positive;
  negative.scale = -0.3;
  positive.scale = 0.3;
  const Mat<Scalar> minus_q = -in.q;
  EXPECT_TRUE(trust::identical(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal, negative),
      attention::scaled_dot_product_attention(minus_q, in.k, in.v, attention::causal, positive)));
  EXPECT_TRUE(trust::identical(attention::attention_weights(in.q, in.k, {}, negative),
                               attention::attention_weights(minus_q, in.k, {}, positive)));
  // ... and the key each query preferred most becomes the one it prefers least.
  const Mat<Scalar> w_pos = attention::attention_weights(in.q, in.k, {}, positive);
  const Mat<Scalar> w_neg = attention::attention_weights(in.q, in.k, {}, negative);
  for (Index i = 0; i < num_queries; ++i) {
    Index best = 0, worst = 0;
    w_pos.row(i).maxCoeff(&best);
    w_neg.row(i).minCoeff(&worst);
    EXPECT_EQ(best, worst) << "row " << i;
  }
}

// options.hpp: "NaN or infinity is rejected with std::invalid_argument" -- not a ShapeError, since
// it is a value, not a size.
TYPED_TEST(InputPolicy, NonFiniteScaleThrowsInvalidArgument) {
  using Scalar = TypeParam;
  Inputs<Scalar> in;
  for (const double scale :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
        -std::numeric_limits<double>::infinity()}) {
    SCOPED_TRACE(scale);
    attention::Options options;
    options.scale = scale;
    const auto expect_invalid = [](const auto& call) {
      try {
        call();
        ADD_FAILURE() << "no exception";
      } catch (const attention::ShapeError& e) {
        ADD_FAILURE() << "a ShapeError, but the scale is a value, not a shape: " << e.what();
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("options.scale"), std::string::npos) << e.what();
      }
    };
    expect_invalid(
        [&] { (void)attention::scaled_dot_product_attention(in.q, in.k, in.v, {}, options); });
    expect_invalid(
        [&] { (void)attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, {}, options); });
    expect_invalid(
        [&] { (void)attention::attention_weights(in.q, in.k, attention::causal, options); });
  }
}

// A scale that is finite as a double but overflows the scalar type (1e39 > FLT_MAX) is infinite
// once converted, exactly what the NaN/inf rule rejects.
TEST(InputPolicyFloat, ScaleOverflowingFloatIsRejected) {
  Inputs<float> in;
  attention::Options options;
  options.scale = 1e39;
  bool threw = false;
  try {
    (void)attention::scaled_dot_product_attention(in.q, in.k, in.v, {}, options);
  } catch (const std::invalid_argument&) {
    threw = true;
  }
  EXPECT_TRUE(threw) << "options.scale = 1e39 is +inf as a float and must be rejected";
}

// ---- Empty sizes
// ---------------------------------------------------------------------------------

// scaled_dot_product.hpp: "\throws ShapeError on inconsistent or zero sizes".
TYPED_TEST(InputPolicy, ZeroSizesThrowShapeError) {
  using Scalar = TypeParam;
  const auto m = [](Index rows, Index cols) {
    return support::random_matrix<Scalar>(rows, cols, 1);
  };
  struct Case {
    const char* what;
    Index l, s, dk, dv;
  };
  for (const Case& c :
       {Case{"L = 0", 0, 5, 4, 3}, Case{"S = 0", 5, 0, 4, 3}, Case{"d_k = 0", 5, 5, 0, 3},
        Case{"d_v = 0", 5, 5, 4, 0}, Case{"all 0", 0, 0, 0, 0}}) {
    SCOPED_TRACE(c.what);
    const Mat<Scalar> q = m(c.l, c.dk), k = m(c.s, c.dk), v = m(c.s, c.dv);
    EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, v), attention::ShapeError);
    EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, v, attention::causal),
                 attention::ShapeError);
    EXPECT_THROW((void)attention::scaled_dot_product_attention_lse(q, k, v), attention::ShapeError);
    if (c.dv != 0) {
      EXPECT_THROW((void)attention::attention_weights(q, k), attention::ShapeError);
    }
    try {
      (void)attention::scaled_dot_product_attention(q, k, v);
    } catch (const attention::ShapeError& e) {
      EXPECT_NE(std::string(e.what()).find("must be at least 1"), std::string::npos) << e.what();
    }
  }
}

// softmax_rows has no "at least 1" rule: an empty matrix is returned empty (0 rows: nothing to do;
// 0 columns: each row is an empty distribution).
TYPED_TEST(InputPolicy, SoftmaxOfEmptyMatrixIsEmpty) {
  using Scalar = TypeParam;
  for (const auto& [rows, cols] : {std::pair<Index, Index>{0, 5}, {5, 0}, {0, 0}}) {
    const Mat<Scalar> x(rows, cols);
    Mat<Scalar> out(rows, cols);
    EXPECT_NO_THROW(attention::softmax_rows(x, out));
    const Mat<Scalar> y = attention::softmax_rows(x);
    EXPECT_EQ(y.rows(), rows);
    EXPECT_EQ(y.cols(), cols);
  }
}

// softmax.hpp: an all -inf row becomes zeros; NaN or +inf makes the row NaN without affecting
// others.
TYPED_TEST(InputPolicy, SoftmaxNonFiniteRowsStayInTheirRow) {
  using Scalar = TypeParam;
  Mat<Scalar> x = support::random_matrix<Scalar>(6, 37, 3);
  const Mat<Scalar> clean = attention::softmax_rows(x);
  x.row(1).setConstant(-inf_v<Scalar>);
  x(2, 30) = nan_v<Scalar>;
  x(3, 0) = inf_v<Scalar>;
  x(4, 36) = -inf_v<Scalar>;
  const Mat<Scalar> p = attention::softmax_rows(x);
  EXPECT_TRUE(trust::identical(p.row(1), Mat<Scalar>::Zero(1, 37)));
  EXPECT_TRUE(trust::row_all_nan(p, 2));
  EXPECT_TRUE(trust::row_all_nan(p, 3));
  EXPECT_TRUE(trust::same_bits(p(4, 36), Scalar(0)));
  EXPECT_NEAR(static_cast<double>(support::row_sums(p)(4)), 1.0, 1e-6);
  for (const Index row : {Index(0), Index(5)})
    EXPECT_TRUE(trust::identical(p.row(row), clean.row(row)));
  // In place gives the same bits.
  Mat<Scalar> in_place = x;
  attention::softmax_rows(in_place, in_place);
  EXPECT_TRUE(trust::identical(in_place, p));
}

// ---- Multi-head attention
// ------------------------------------------------------------------------

// multi_head.hpp: "\throws ShapeError unless num_heads >= 1 divides d_model >= 1".
TYPED_TEST(InputPolicy, MultiHeadRejectsBadHeadCounts) {
  using Scalar = TypeParam;
  using Layer = attention::MultiHeadAttention<Scalar>;
  EXPECT_THROW(Layer(8, 0), attention::ShapeError);
  EXPECT_THROW(Layer(8, -2), attention::ShapeError);
  EXPECT_THROW(Layer(0, 1), attention::ShapeError);
  EXPECT_THROW(Layer(0, 0), attention::ShapeError);
  EXPECT_THROW(Layer(8, 3), attention::ShapeError);
  EXPECT_THROW(Layer(8, 16), attention::ShapeError);
  try {
    Layer layer(8, 0);
  } catch (const attention::ShapeError& e) {
    EXPECT_NE(std::string(e.what()).find("num_heads"), std::string::npos) << e.what();
  }
  const Mat<Scalar> w = support::random_matrix<Scalar>(24, 8, 1),
                    ow = support::random_matrix<Scalar>(8, 8, 2);
  const Mat<Scalar> b = support::random_matrix<Scalar>(24, 1, 3),
                    ob = support::random_matrix<Scalar>(8, 1, 4);
  EXPECT_THROW((void)Layer::from_pytorch(w, b, ow, ob, 0), attention::ShapeError);
  EXPECT_NO_THROW((void)Layer::from_pytorch(w, b, ow, ob, 2));
}

TYPED_TEST(InputPolicy, MultiHeadRejectsEmptySequences) {
  using Scalar = TypeParam;
  attention::MultiHeadAttention<Scalar> layer(8, 2);
  layer.reset_parameters(7);
  const Mat<Scalar> x = support::random_matrix<Scalar>(5, 8, 1), empty(0, 8);
  EXPECT_THROW((void)layer.forward(empty), attention::ShapeError);
  EXPECT_THROW((void)layer.forward(x, empty, empty), attention::ShapeError);
  EXPECT_THROW((void)layer.forward(empty, x, x), attention::ShapeError);
  EXPECT_THROW((void)layer.head_weights(empty), attention::ShapeError);
  EXPECT_NO_THROW((void)layer.forward(x));
}

// A NaN in one query token of cross-attention stays in that token's output row.
TYPED_TEST(InputPolicy, MultiHeadNanInOneQueryStaysInThatRow) {
  using Scalar = TypeParam;
  attention::MultiHeadAttention<Scalar> layer(32, 4);
  layer.reset_parameters(5);
  const Mat<Scalar> memory = support::random_matrix<Scalar>(45, 32, 2);
  Mat<Scalar> query = support::random_matrix<Scalar>(70, 32, 1);
  const Mat<Scalar> clean = layer.forward(query, memory, memory, attention::causal);
  query(33, 7) = nan_v<Scalar>;
  const Mat<Scalar> out = layer.forward(query, memory, memory, attention::causal);
  EXPECT_TRUE(trust::row_all_nan(out, 33));
  Mat<Scalar> out_rest = out, clean_rest = clean;
  out_rest.row(33).setZero();
  clean_rest.row(33).setZero();
  // Each projected row is computed from its own input row only (kernels/projection.hpp; Eigen's
  // product for long double), so other rows do not depend on row 33's values.
  EXPECT_TRUE(trust::identical(out_rest, clean_rest));
}

// project() has no "at least 1" rule either: zero tokens in, zero tokens out.
TYPED_TEST(InputPolicy, ProjectionOfZeroTokensIsEmpty) {
  using Scalar = TypeParam;
  const Mat<Scalar> x(0, 4), w = support::random_matrix<Scalar>(4, 3, 1);
  const attention::RowVector<Scalar> b = attention::RowVector<Scalar>::Zero(3);
  const Mat<Scalar> y = attention::project(x, w, b);
  EXPECT_EQ(y.rows(), 0);
  EXPECT_EQ(y.cols(), 3);
}

}  // namespace
}  // namespace input_policy_test
