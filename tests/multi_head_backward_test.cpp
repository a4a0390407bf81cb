// SPDX-License-Identifier: MIT
// Tests for multi_head_attention_backward (attention/multi_head_backward.hpp): the gradients with
// respect to the inputs (x for self-attention; query, key, value for cross-attention) and to w_q,
// w_k, w_v, w_o, b_q, b_k, b_v, b_o, against central finite differences of
//   loss = sum(d_out ∘ layer.forward(...))
// in double (relative error bound 1e-8) and long double (1e-11), for each mask kind, one head,
// several heads and head_dim 1; then float against double, both forms, and the shape checks.

#include <gtest/gtest.h>

#include <attention/multi_head_backward.hpp>
#include <cstddef>
#include <limits>
#include <string>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/layers.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
using attention::Matrix;
using attention::MultiHeadAttention;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename T>
class MultiHeadBackwardGradient : public ::testing::Test {};
using CheckScalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(MultiHeadBackwardGradient, CheckScalars, support::ScalarNames);

using support::expect_parameter_gradients_match;

template <typename T>
MultiHeadAttention<T> random_glorot_layer(Index d_model, Index num_heads, unsigned seed) {
  return support::glorot_layer<T>(d_model, num_heads, num_heads, seed);
}

template <typename T, typename MakeMask>
void expect_self_attention_gradients_match(Index seq_len, Index d_model, Index num_heads,
                                           unsigned seed, const MakeMask& make_mask) {
  SCOPED_TRACE(::testing::Message() << "self-attention, L = " << seq_len
                                    << ", d_model = " << d_model << ", num_heads = " << num_heads);
  MultiHeadAttention<T> layer = random_glorot_layer<T>(d_model, num_heads, seed);
  Matrix<T> x = support::random_matrix<T>(seq_len, d_model, seed + 10);
  const Matrix<T> d_out = support::random_matrix<T>(seq_len, d_model, seed + 11);
  const auto grads = attention::multi_head_attention_backward(layer, x, d_out, make_mask());
  const auto loss = [&] { return support::weighted_sum(d_out, layer.forward(x, make_mask())); };
  EXPECT_TRUE(support::gradient_matches(loss, x, grads.dx, support::gradient_bound<T>())) << "dx";
  expect_parameter_gradients_match(loss, layer, grads);
}

template <typename T, typename MakeMask>
void expect_cross_attention_gradients_match(Index num_queries, Index num_keys, Index d_model,
                                            Index num_heads, unsigned seed,
                                            const MakeMask& make_mask) {
  SCOPED_TRACE(::testing::Message()
               << "cross-attention, L = " << num_queries << ", S = " << num_keys
               << ", d_model = " << d_model << ", num_heads = " << num_heads);
  MultiHeadAttention<T> layer = random_glorot_layer<T>(d_model, num_heads, seed);
  Matrix<T> query = support::random_matrix<T>(num_queries, d_model, seed + 10);
  Matrix<T> key = support::random_matrix<T>(num_keys, d_model, seed + 11);
  Matrix<T> value = support::random_matrix<T>(num_keys, d_model, seed + 12);
  const Matrix<T> d_out = support::random_matrix<T>(num_queries, d_model, seed + 13);
  const auto grads =
      attention::multi_head_attention_backward(layer, query, key, value, d_out, make_mask());
  const auto loss = [&] {
    return support::weighted_sum(d_out, layer.forward(query, key, value, make_mask()));
  };
  constexpr long double bound = support::gradient_bound<T>();
  EXPECT_TRUE(support::gradient_matches(loss, query, grads.d_query, bound)) << "d_query";
  EXPECT_TRUE(support::gradient_matches(loss, key, grads.d_key, bound)) << "d_key";
  EXPECT_TRUE(support::gradient_matches(loss, value, grads.d_value, bound)) << "d_value";
  EXPECT_EQ(grads.dx.size(), 0);
  expect_parameter_gradients_match(loss, layer, grads);
}

TYPED_TEST(MultiHeadBackwardGradient, SelfAttentionNoMask) {
  expect_self_attention_gradients_match<TypeParam>(5, 6, 2, 100,
                                                   [] { return attention::NoMask{}; });
}

TYPED_TEST(MultiHeadBackwardGradient, SelfAttentionCausal) {
  expect_self_attention_gradients_match<TypeParam>(5, 6, 3, 200, [] { return attention::causal; });
}

TYPED_TEST(MultiHeadBackwardGradient, SelfAttentionOneHeadAndHeadDimOne) {
  expect_self_attention_gradients_match<TypeParam>(4, 4, 1, 300, [] { return attention::causal; });
  expect_self_attention_gradients_match<TypeParam>(4, 4, 4, 310, [] { return attention::causal; });
}

// keep() with a fully masked query: its output row is b_o alone, so only db_o and dw_o see it.
TYPED_TEST(MultiHeadBackwardGradient, SelfAttentionKeepWithFullyMaskedRow) {
  BoolMatrix visible = support::random_keep(5, 5, 400, 0.6);
  visible.row(2).setConstant(false);
  expect_self_attention_gradients_match<TypeParam>(5, 6, 2, 410,
                                                   [&] { return attention::keep(visible); });
}

TYPED_TEST(MultiHeadBackwardGradient, SelfAttentionBias) {
  using T = TypeParam;
  Matrix<T> b = support::random_matrix<T>(5, 5, 500);
  b(1, 3) = b(4, 0) = -std::numeric_limits<T>::infinity();
  expect_self_attention_gradients_match<T>(5, 6, 2, 510, [&] { return attention::bias(b); });
}

// Cross-attention, causal with L < S and L > S, and unmasked.
TYPED_TEST(MultiHeadBackwardGradient, CrossAttention) {
  expect_cross_attention_gradients_match<TypeParam>(3, 6, 6, 2, 600,
                                                    [] { return attention::causal; });
  expect_cross_attention_gradients_match<TypeParam>(6, 3, 6, 3, 610,
                                                    [] { return attention::causal; });
  expect_cross_attention_gradients_match<TypeParam>(4, 5, 4, 2, 620,
                                                    [] { return attention::NoMask{}; });
}

// --- Exact properties ---------------------------------------------------------------------------

template <typename T>
class MultiHeadBackward : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(MultiHeadBackward, Scalars, support::ScalarNames);

TYPED_TEST(MultiHeadBackward, SelfAttentionDxIsTheSumOfItsThreeRoles) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_glorot_layer<T>(8, 2, 700);
  const Matrix<T> x = support::random_matrix<T>(5, 8, 701),
                  d_out = support::random_matrix<T>(5, 8, 702);
  const auto self = attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
  const auto cross =
      attention::multi_head_attention_backward(layer, x, x, x, d_out, attention::causal);
  EXPECT_TRUE(support::is_near(self.dx, Matrix<T>(cross.d_query + cross.d_key + cross.d_value), 0));
  EXPECT_TRUE(support::is_near(self.d_query, cross.d_query, 0));
  EXPECT_TRUE(support::is_near(self.dw_q, cross.dw_q, 0));
  EXPECT_TRUE(support::is_near(self.db_o, cross.db_o, 0));
}

// Inputs that are gradients of an earlier call, passed with the same grads: the results are those
// of the inputs as they were. (dw_q, d_model x d_model, is written before the keys are read, so
// 8 tokens of width 8 taken from it would be overwritten mid-call; d_out = grads.dx is the chain
// rule through a stack of layers.)
TYPED_TEST(MultiHeadBackward, InputsThatShareMemoryWithTheGradients) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_glorot_layer<T>(8, 2, 730);
  const Matrix<T> x = support::random_matrix<T>(8, 8, 731),
                  d_out = support::random_matrix<T>(8, 8, 732);
  attention::MultiHeadGradients<T> grads =
      attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
  const Matrix<T> w = grads.dw_q * T(10), dx = grads.dx;  // copies, for the expected values
  grads.dw_q = w;
  const auto expected_cross =
      attention::multi_head_attention_backward(layer, x, w, w, dx, attention::causal);
  attention::multi_head_attention_backward(layer, x, grads.dw_q, grads.dw_q, grads.dx, grads,
                                           attention::causal);
  EXPECT_TRUE(support::is_near(grads.dw_q, expected_cross.dw_q, 0));
  EXPECT_TRUE(support::is_near(grads.dw_k, expected_cross.dw_k, 0));
  EXPECT_TRUE(support::is_near(grads.d_key, expected_cross.d_key, 0));
  EXPECT_EQ(grads.dx.size(), 0);

  grads.dw_q = w;
  const auto expected_self = attention::multi_head_attention_backward(layer, w, d_out);
  attention::multi_head_attention_backward(layer, grads.dw_q, d_out, grads);
  EXPECT_TRUE(support::is_near(grads.dw_q, expected_self.dw_q, 0));
  EXPECT_TRUE(support::is_near(grads.dw_v, expected_self.dw_v, 0));
  EXPECT_TRUE(support::is_near(grads.dx, expected_self.dx, 0));
}

// b_o is added to every output row: db_o = colsum(d_out), whatever the rest.
TYPED_TEST(MultiHeadBackward, OutputBiasGradientIsColumnSumOfDOut) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_glorot_layer<T>(6, 3, 710);
  const Matrix<T> x = support::random_matrix<T>(4, 6, 711),
                  d_out = support::random_matrix<T>(4, 6, 712);
  const auto g = attention::multi_head_attention_backward(layer, x, d_out);
  EXPECT_TRUE(support::is_near(g.db_o, Matrix<T>(d_out.colwise().sum()), 0));
}

TYPED_TEST(MultiHeadBackward, AgreesWithDouble) {
  using T = TypeParam;
  const MultiHeadAttention<double> layer = random_glorot_layer<double>(8, 2, 720);
  const Matrix<double> x = support::random_matrix<double>(7, 8, 721);
  const Matrix<double> d_out = support::random_matrix<double>(7, 8, 722);
  const auto expected =
      attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
  MultiHeadAttention<T> layer_t(8, 2);
  layer_t.w_q = layer.w_q.cast<T>();
  layer_t.w_k = layer.w_k.cast<T>();
  layer_t.w_v = layer.w_v.cast<T>();
  layer_t.w_o = layer.w_o.cast<T>();
  layer_t.b_q = layer.b_q.cast<T>();
  layer_t.b_k = layer.b_k.cast<T>();
  layer_t.b_v = layer.b_v.cast<T>();
  layer_t.b_o = layer.b_o.cast<T>();
  const auto actual = attention::multi_head_attention_backward(
      layer_t, Matrix<T>(x.cast<T>()), Matrix<T>(d_out.cast<T>()), attention::causal);
  const long double tol = std::is_same_v<T, float> ? 2e-5L : 1e-13L;
  EXPECT_TRUE(support::is_near(actual.dx, expected.dx, tol));
  EXPECT_TRUE(support::is_near(actual.dw_q, expected.dw_q, tol));
  EXPECT_TRUE(support::is_near(actual.dw_k, expected.dw_k, tol));
  EXPECT_TRUE(support::is_near(actual.dw_v, expected.dw_v, tol));
  EXPECT_TRUE(support::is_near(actual.dw_o, expected.dw_o, tol));
  EXPECT_TRUE(support::is_near(actual.db_q, expected.db_q, tol));
  EXPECT_TRUE(support::is_near(actual.db_k, expected.db_k, tol));
  EXPECT_TRUE(support::is_near(actual.db_v, expected.db_v, tol));
}

TYPED_TEST(MultiHeadBackward, OutputOverloadMatchesAndReusesStorage) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_glorot_layer<T>(6, 2, 730);
  const Matrix<T> x = support::random_matrix<T>(4, 6, 731),
                  d_out = support::random_matrix<T>(4, 6, 732);
  const auto expected =
      attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
  attention::MultiHeadGradients<T> grads;
  attention::multi_head_attention_backward(layer, x, d_out, grads, attention::causal);
  const T* dw_q = grads.dw_q.data();
  const T* dx = grads.dx.data();
  attention::multi_head_attention_backward(layer, x, d_out, grads, attention::causal);
  EXPECT_EQ(grads.dw_q.data(), dw_q);
  EXPECT_EQ(grads.dx.data(), dx);
  EXPECT_TRUE(support::is_near(grads.dx, expected.dx, 0));
  EXPECT_TRUE(support::is_near(grads.dw_o, expected.dw_o, 0));
  // Reused for cross-attention: dx is emptied, not left stale.
  attention::multi_head_attention_backward(layer, x, x, x, d_out, grads, attention::causal);
  EXPECT_EQ(grads.dx.size(), 0);
}

// Column-major and expression inputs give the same gradients.
TEST(MultiHeadBackward, AnyInputLayout) {
  const MultiHeadAttention<double> layer = random_glorot_layer<double>(6, 2, 740);
  const Matrix<double> x = support::random_matrix<double>(4, 6, 741);
  const Matrix<double> d_out = support::random_matrix<double>(4, 6, 742);
  const auto expected = attention::multi_head_attention_backward(layer, x, d_out);
  const Eigen::MatrixXd x_col = x, d_out_col = d_out;
  const auto col_major = attention::multi_head_attention_backward(layer, x_col, d_out_col);
  const auto expression =
      attention::multi_head_attention_backward(layer, x * 1.0, d_out.array().matrix());
  EXPECT_TRUE(support::is_near(col_major.dx, expected.dx, 0));
  EXPECT_TRUE(support::is_near(col_major.dw_k, expected.dw_k, 0));
  EXPECT_TRUE(support::is_near(expression.dx, expected.dx, 0));
  EXPECT_TRUE(support::is_near(expression.dw_v, expected.dw_v, 0));
}

// --- Against the materialising formulas in long double ---------------------------------------

// The tiled backward of every head (float, double) and the materialising one (long double) against
// support::reference_backward, the formulas written out in long double (every gradient, dx of
// self-attention included): grouped heads, position features, and sizes across the kernels' 64-row
// tiles and key spans.
struct ReferenceCase {
  const char* name;
  Index num_queries, num_keys, d_model, num_heads, num_kv_heads;
  bool self, causal;
  std::size_t features;  // index into support::position_features_for_four_heads(), or none
};
constexpr std::size_t no_features = 99;

template <typename T>
void expect_matches_reference(const ReferenceCase& c, unsigned seed) {
  SCOPED_TRACE(c.name);
  MultiHeadAttention<T> layer =
      support::random_layer<T>(c.d_model, c.num_heads, c.num_kv_heads, seed);
  support::PositionFeatures f;
  if (c.features != no_features) f = support::position_features_for_four_heads()[c.features];
  support::set_positions(layer, f);
  const Matrix<T> query = support::random_matrix<T>(c.num_queries, c.d_model, seed + 10);
  const Matrix<T> key =
      c.self ? query : support::random_matrix<T>(c.num_keys, c.d_model, seed + 11);
  const Matrix<T> value =
      c.self ? query : support::random_matrix<T>(c.num_keys, c.d_model, seed + 12);
  const Matrix<T> d_out = support::random_matrix<T>(c.num_queries, c.d_model, seed + 13);
  // Self-attention through its own overload, which also gives dx = d_query + d_key + d_value.
  const auto backward = [&](const auto& mask) {
    return c.self ? attention::multi_head_attention_backward(layer, query, d_out, mask)
                  : attention::multi_head_attention_backward(layer, query, key, value, d_out, mask);
  };
  const auto grads = c.causal ? backward(attention::causal) : backward(attention::NoMask{});
  namespace ref = support::reference;
  const support::ReferenceGradients expected = support::reference_backward(
      ref::to_real(query), ref::to_real(key), ref::to_real(value), ref::to_real(d_out),
      support::parameters_of(layer), c.causal ? ref::Mask::causal() : ref::Mask::none(),
      support::reference_positions(f, c.num_keys - c.num_queries, 0));
  // Gradients reach 25 and sum up to S = 300 terms: 20x the forward's tolerance (worst errors
  // seen: float 1.1e-5, double 9e-15, long double 8e-18).
  const long double tol = 20 * support::tolerance<T>();
  EXPECT_TRUE(support::is_near(grads.d_query, expected.d_query, tol)) << "d_query";
  EXPECT_TRUE(support::is_near(grads.d_key, expected.d_key, tol)) << "d_key";
  EXPECT_TRUE(support::is_near(grads.d_value, expected.d_value, tol)) << "d_value";
  EXPECT_TRUE(support::is_near(grads.dw_q, expected.dw_q, tol)) << "dw_q";
  EXPECT_TRUE(support::is_near(grads.dw_k, expected.dw_k, tol)) << "dw_k";
  EXPECT_TRUE(support::is_near(grads.dw_v, expected.dw_v, tol)) << "dw_v";
  EXPECT_TRUE(support::is_near(grads.dw_o, expected.dw_o, tol)) << "dw_o";
  EXPECT_TRUE(support::is_near(grads.db_q, expected.db_q, tol)) << "db_q";
  EXPECT_TRUE(support::is_near(grads.db_k, expected.db_k, tol)) << "db_k";
  EXPECT_TRUE(support::is_near(grads.db_v, expected.db_v, tol)) << "db_v";
  EXPECT_TRUE(support::is_near(grads.db_o, expected.db_o, tol)) << "db_o";
  if (c.self) {
    // x feeds the queries, keys and values: dx is the sum of the reference's three gradients.
    const ref::Matrix expected_dx = expected.d_query + expected.d_key + expected.d_value;
    EXPECT_TRUE(support::is_near(grads.dx, expected_dx, tol)) << "dx";
  } else {
    EXPECT_EQ(grads.dx.size(), 0);
  }
}

TYPED_TEST(MultiHeadBackward, MatchesTheMaterialisingFormulasInLongDouble) {
  const ReferenceCase cases[] = {
      {"self, causal, L = 70, GQA 4/2, RoPE + ALiBi + soft-cap", 70, 70, 16, 4, 2, true, true, 3},
      {"cross, L = 37, S = 150, MQA, interleaved RoPE", 37, 150, 16, 4, 1, false, false, 0},
      {"cross, causal, L = 90, S = 20, ALiBi", 90, 20, 16, 4, 4, false, true, 2},
      {"cross, L = 3, S = 300, partial RoPE", 3, 300, 16, 4, 2, false, false, 1},
      {"self, L = 9, no features", 9, 9, 12, 3, 3, true, false, no_features}};
  unsigned seed = 900;
  for (const ReferenceCase& c : cases) expect_matches_reference<TypeParam>(c, seed += 20);
}

// The rule of the materialising backward for non-finite inputs, which the tiled backward hands
// such heads to: a NaN in value row 3 reaches only the queries that give key 3 a non-zero weight.
TYPED_TEST(MultiHeadBackward, NaNInAValueReachesOnlyTheQueriesThatSeeIt) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = support::random_layer<T>(8, 2, 2, 950);
  const Matrix<T> query = support::random_matrix<T>(5, 8, 951);
  const Matrix<T> key = support::random_matrix<T>(6, 8, 952);
  Matrix<T> value = support::random_matrix<T>(6, 8, 953);
  const Matrix<T> d_out = support::random_matrix<T>(5, 8, 954);
  BoolMatrix visible = BoolMatrix::Constant(5, 6, true);
  visible.col(3).setConstant(false);
  visible(1, 3) = true;  // only query 1 sees key 3
  const auto finite = attention::multi_head_attention_backward(layer, query, key, value, d_out,
                                                               attention::keep(visible));
  value(3, 2) = std::numeric_limits<T>::quiet_NaN();
  const auto with_nan = attention::multi_head_attention_backward(layer, query, key, value, d_out,
                                                                 attention::keep(visible));
  const long double tol = 10 * support::tolerance<T>();
  for (Index i = 0; i < 5; ++i) {
    if (i == 1) {
      EXPECT_TRUE(with_nan.d_query.row(i).array().isNaN().all());
    } else {
      EXPECT_TRUE(support::is_near(with_nan.d_query.row(i), finite.d_query.row(i), tol)) << i;
    }
  }
  // dV_j = sum_i P(i, j) dO_i does not read V: every row finite, as before.
  EXPECT_TRUE(support::is_near(with_nan.d_value, finite.d_value, tol));
  // dK_j gets ds(1, j) q_1 from query 1 (NaN for every key it sees); key 3 is seen by query 1.
  EXPECT_TRUE(with_nan.d_key.row(3).array().isNaN().all());
  EXPECT_TRUE(with_nan.db_o.allFinite());
}

// --- Shape checks -------------------------------------------------------------------------------

class MultiHeadBackwardShapes : public ::testing::Test {
 protected:
  MultiHeadAttention<double> layer = random_glorot_layer<double>(4, 2, 800);
  Matrix<double> x = Matrix<double>::Ones(3, 4), key = Matrix<double>::Ones(5, 4);
  Matrix<double> d_out = Matrix<double>::Ones(3, 4);
};

TEST_F(MultiHeadBackwardShapes, ValidShapesDoNotThrow) {
  EXPECT_NO_THROW((void)attention::multi_head_attention_backward(layer, x, d_out));
  EXPECT_NO_THROW((void)attention::multi_head_attention_backward(layer, x, key, key, d_out));
}

TEST_F(MultiHeadBackwardShapes, ThrowsWhenInputWidthIsNotDModel) {
  EXPECT_THROW(
      (void)attention::multi_head_attention_backward(layer, Matrix<double>::Ones(3, 5), d_out),
      attention::ShapeError);
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, Matrix<double>::Ones(5, 3),
                                                              key, d_out),
               attention::ShapeError);
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, key,
                                                              Matrix<double>::Ones(5, 3), d_out),
               attention::ShapeError);
}

TEST_F(MultiHeadBackwardShapes, ThrowsOnEmptySequences) {
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, Matrix<double>(0, 4),
                                                              Matrix<double>(0, 4)),
               attention::ShapeError);
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, Matrix<double>(0, 4),
                                                              Matrix<double>(0, 4), d_out),
               attention::ShapeError);
}

TEST_F(MultiHeadBackwardShapes, ThrowsWhenKeyAndValueLengthsDiffer) {
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, key,
                                                              Matrix<double>::Ones(4, 4), d_out),
               attention::ShapeError);
}

TEST_F(MultiHeadBackwardShapes, ThrowsWhenDOutHasWrongShape) {
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, Matrix<double>::Ones(2, 4)),
               attention::ShapeError);
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, Matrix<double>::Ones(3, 5)),
               attention::ShapeError);
}

TEST_F(MultiHeadBackwardShapes, ThrowsWhenMaskHasWrongShape) {
  EXPECT_THROW((void)attention::multi_head_attention_backward(
                   layer, x, d_out, attention::keep(BoolMatrix::Constant(3, 4, true))),
               attention::ShapeError);
  EXPECT_THROW((void)attention::multi_head_attention_backward(
                   layer, x, key, key, d_out, attention::bias(Matrix<double>::Zero(3, 3))),
               attention::ShapeError);
}

TEST_F(MultiHeadBackwardShapes, ThrowsWhenAParameterLostItsShape) {
  layer.w_k.resize(4, 3);
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, d_out),
               attention::ShapeError);
  layer = random_glorot_layer<double>(4, 2, 800);
  layer.b_o.resize(5);
  EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, d_out),
               attention::ShapeError);
}

TEST_F(MultiHeadBackwardShapes, ShapeErrorNamesFunctionArgumentsAndSizes) {
  try {
    (void)attention::multi_head_attention_backward(layer, x, Matrix<double>::Ones(3, 6));
    FAIL() << "no exception";
  } catch (const attention::ShapeError& e) {
    EXPECT_EQ(
        std::string(e.what()),
        "attention::multi_head_attention_backward: d_out.cols() (= 6) must equal d_model (= 4)");
  }
}

}  // namespace
