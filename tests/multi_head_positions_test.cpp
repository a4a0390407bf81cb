// SPDX-License-Identifier: MIT
// Tests for the position features of attention/multi_head_positions.hpp (PositionFeatures, on their
// own at the end) and for MultiHeadAttention's, which it has as public members: rope (RoPE on
// every head of Q and K, both layouts, partial rotary), alibi_slopes (a per-head ALiBi bias) and
// softcap. forward (self- and cross-attention, lower-right aligned positions) and head_weights
// against the long-double reference, which writes each feature out independently
// (support/reference.hpp); multi_head_attention_backward against central finite differences with
// each feature; and the checks of the features' sizes and values. Incremental decoding with the
// features is tested in multi_head_cache_test.cpp.

#include <gtest/gtest.h>

#include <attention/multi_head.hpp>
#include <attention/multi_head_backward.hpp>
#include <attention/multi_head_positions.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/layers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace multi_head_positions_test {
namespace {

using support::message_of;

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::MultiHeadAttention;
using RealMatrix = ref::Matrix;
using support::parameters_of;
using support::PositionFeatures;

template <typename T>
class MultiHeadPositions : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(MultiHeadPositions, Scalars, support::ScalarNames);

// (num_heads, num_kv_heads): plain multi-head, grouped-query, multi-query. d_model 32: head_dim 8.
const std::pair<Index, Index> head_counts[] = {{4, 4}, {4, 2}, {4, 1}};
constexpr Index d_model = 32;

template <typename T>
MultiHeadAttention<T> layer_with(const PositionFeatures& features, Index num_kv_heads,
                                 unsigned seed) {
  MultiHeadAttention<T> layer = support::glorot_layer<T>(d_model, 4, num_kv_heads, seed);
  support::set_positions(layer, features);
  return layer;
}

// Errors measured over this file's forward cases: 3.1e-7 (float), 6.5e-16 (double), 4.3e-19
// (long double), within support::tolerance<T>() (eigen_matchers.hpp).
TYPED_TEST(MultiHeadPositions, SelfAttentionMatchesTheReference) {
  using T = TypeParam;
  const Index n = 37;  // crosses the kernel's 32-key tiles
  const Matrix<T> x = support::random_matrix<T>(n, d_model, 11);
  const RealMatrix rx = ref::to_real(x);
  const support::BoolMatrix visible = support::random_keep(n, n, 12, 0.7);
  for (const PositionFeatures& features : support::position_features_for_four_heads()) {
    const ref::Positions positions = support::reference_positions(features, 0, 0);
    for (const auto& [num_heads, num_kv_heads] : head_counts) {
      SCOPED_TRACE(::testing::Message() << features.name << ", kv heads " << num_kv_heads);
      const MultiHeadAttention<T> layer = layer_with<T>(features, num_kv_heads, 13);
      const ref::MultiHeadParameters p = parameters_of(layer);
      EXPECT_TRUE(support::is_near(layer.forward(x),
                                   ref::multi_head(rx, rx, rx, p, ref::Mask::none(), positions),
                                   support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(layer.forward(x, attention::causal),
                                   ref::multi_head(rx, rx, rx, p, ref::Mask::causal(), positions),
                                   support::tolerance<T>()));
      EXPECT_TRUE(
          support::is_near(layer.forward(x, attention::keep(visible)),
                           ref::multi_head(rx, rx, rx, p, ref::Mask::keep(visible), positions),
                           support::tolerance<T>()));
      const std::vector<Matrix<T>> weights = layer.head_weights(x, attention::causal);
      const std::vector<RealMatrix> expected =
          ref::multi_head_weights(rx, rx, p, ref::Mask::causal(), positions);
      ASSERT_EQ(weights.size(), expected.size());
      for (std::size_t h = 0; h < weights.size(); ++h) {
        EXPECT_TRUE(support::is_near(weights[h], expected[h], support::tolerance<T>())) << h;
      }
    }
  }
}

// L != S: query row i is at position i + (S - L), key row j at j (lower-right aligned, as
// attention::causal_lower_right and attention::alibi).
TYPED_TEST(MultiHeadPositions, CrossAttentionPositionsAreLowerRightAligned) {
  using T = TypeParam;
  for (const auto& [num_queries, num_keys] : {std::pair<Index, Index>{5, 13}, {13, 5}, {1, 40}}) {
    const Matrix<T> query = support::random_matrix<T>(num_queries, d_model, 21);
    const Matrix<T> key = support::random_matrix<T>(num_keys, d_model, 22);
    const Matrix<T> value = support::random_matrix<T>(num_keys, d_model, 23);
    const RealMatrix rq = ref::to_real(query), rk = ref::to_real(key), rv = ref::to_real(value);
    for (const PositionFeatures& features : support::position_features_for_four_heads()) {
      SCOPED_TRACE(::testing::Message()
                   << features.name << ", L = " << num_queries << ", S = " << num_keys);
      const ref::Positions positions =
          support::reference_positions(features, num_keys - num_queries, 0);
      const MultiHeadAttention<T> layer = layer_with<T>(features, 2, 24);
      const ref::MultiHeadParameters p = parameters_of(layer);
      EXPECT_TRUE(support::is_near(layer.forward(query, key, value),
                                   ref::multi_head(rq, rk, rv, p, ref::Mask::none(), positions),
                                   support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(
          layer.forward(query, key, value, attention::causal_lower_right),
          ref::multi_head(rq, rk, rv, p, ref::Mask::causal_lower_right(), positions),
          support::tolerance<T>()));
      const std::vector<Matrix<T>> weights = layer.head_weights(query, key);
      const std::vector<RealMatrix> expected =
          ref::multi_head_weights(rq, rk, p, ref::Mask::none(), positions);
      for (std::size_t h = 0; h < weights.size(); ++h) {
        EXPECT_TRUE(support::is_near(weights[h], expected[h], support::tolerance<T>())) << h;
      }
    }
  }
}

// What lower-right alignment buys: the last L tokens as queries over the whole sequence give the
// last L rows of the self-attention forward, with every feature.
TYPED_TEST(MultiHeadPositions, LastQueriesOverTheWholeSequenceGiveTheLastRows) {
  using T = TypeParam;
  const Index n = 29;
  const Matrix<T> x = support::random_matrix<T>(n, d_model, 31);
  for (const PositionFeatures& features : support::position_features_for_four_heads()) {
    SCOPED_TRACE(features.name);
    const MultiHeadAttention<T> layer = layer_with<T>(features, 2, 32);
    const Matrix<T> whole = layer.forward(x, attention::causal);
    for (const Index last : {1, 4, 29}) {
      EXPECT_TRUE(
          support::is_near(layer.forward(x.bottomRows(last), x, x, attention::causal_lower_right),
                           whole.bottomRows(last), 2 * support::tolerance<T>()))
          << last;
    }
  }
}

// Each feature changes the output by far more than the tolerance (so the tests above would see a
// feature that is ignored), and a default layer has none.
TEST(MultiHeadPositions, DefaultsAreOffAndEachFeatureMatters) {
  const MultiHeadAttention<double> plain = support::glorot_layer<double>(d_model, 4, 2, 41);
  EXPECT_FALSE(plain.rope.has_value());
  EXPECT_TRUE(plain.alibi_slopes.empty());
  EXPECT_FALSE(plain.softcap.has_value());
  const Matrix<double> x = support::random_matrix<double>(17, d_model, 42);
  const Matrix<double> base = plain.forward(x, attention::causal);
  for (const PositionFeatures& features : support::position_features_for_four_heads()) {
    MultiHeadAttention<double> layer = plain;
    support::set_positions(layer, features);
    EXPECT_GT((layer.forward(x, attention::causal) - base).cwiseAbs().maxCoeff(), 1e-3)
        << features.name;
  }
  MultiHeadAttention<double> capped = plain;
  capped.softcap = 0.5;
  EXPECT_GT((capped.forward(x, attention::causal) - base).cwiseAbs().maxCoeff(), 1e-3);
}

// --- Backward ------------------------------------------------------------------------------------

template <typename T>
class MultiHeadPositionsGradient : public ::testing::Test {};
using CheckScalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(MultiHeadPositionsGradient, CheckScalars, support::ScalarNames);

/// The features whose gradients are checked: all of them in double; in long double (whose
/// materialising forward makes each finite difference slow) the one that has them all at once.
template <typename T>
std::vector<PositionFeatures> features_to_check() {
  std::vector<PositionFeatures> all = support::position_features_for_four_heads();
  if (std::is_same_v<T, long double>) all.erase(all.begin(), all.end() - 1);
  return all;
}

TYPED_TEST(MultiHeadPositionsGradient, SelfAttentionMatchesFiniteDifferences) {
  using T = TypeParam;
  const Index n = 5;
  for (const PositionFeatures& features : features_to_check<T>()) {
    for (const Index num_kv_heads : {4, 2}) {
      SCOPED_TRACE(::testing::Message() << features.name << ", kv heads " << num_kv_heads);
      MultiHeadAttention<T> layer = layer_with<T>(features, num_kv_heads, 51);
      Matrix<T> x = support::random_matrix<T>(n, d_model, 52);
      const Matrix<T> d_out = support::random_matrix<T>(n, d_model, 53);
      const auto grads =
          attention::multi_head_attention_backward(layer, x, d_out, attention::causal);
      const auto loss = [&] {
        return support::weighted_sum(d_out, layer.forward(x, attention::causal));
      };
      EXPECT_TRUE(support::gradient_matches(loss, x, grads.dx, support::gradient_bound<T>()))
          << "dx";
      support::expect_parameter_gradients_match(loss, layer, grads);
    }
  }
}

// L < S and L > S: the query positions i + (S - L) enter RoPE's backward (R^T at the same
// positions) and ALiBi's bias.
TYPED_TEST(MultiHeadPositionsGradient, CrossAttentionMatchesFiniteDifferences) {
  using T = TypeParam;
  for (const auto& [num_queries, num_keys] : {std::pair<Index, Index>{3, 7}, {6, 4}}) {
    for (const PositionFeatures& features : features_to_check<T>()) {
      SCOPED_TRACE(::testing::Message()
                   << features.name << ", L = " << num_queries << ", S = " << num_keys);
      MultiHeadAttention<T> layer = layer_with<T>(features, 2, 61);
      Matrix<T> query = support::random_matrix<T>(num_queries, d_model, 62);
      Matrix<T> key = support::random_matrix<T>(num_keys, d_model, 63);
      Matrix<T> value = support::random_matrix<T>(num_keys, d_model, 64);
      const Matrix<T> d_out = support::random_matrix<T>(num_queries, d_model, 65);
      const auto grads = attention::multi_head_attention_backward(layer, query, key, value, d_out,
                                                                  attention::causal_lower_right);
      const auto loss = [&] {
        return support::weighted_sum(
            d_out, layer.forward(query, key, value, attention::causal_lower_right));
      };
      constexpr long double bound = support::gradient_bound<T>();
      EXPECT_TRUE(support::gradient_matches(loss, query, grads.d_query, bound)) << "d_query";
      EXPECT_TRUE(support::gradient_matches(loss, key, grads.d_key, bound)) << "d_key";
      EXPECT_TRUE(support::gradient_matches(loss, value, grads.d_value, bound)) << "d_value";
      support::expect_parameter_gradients_match(loss, layer, grads);
    }
  }
}

// --- Checks --------------------------------------------------------------------------------------

TEST(MultiHeadPositionsChecks, RopeMustHaveTheHeadWidth) {
  MultiHeadAttention<double> layer = support::glorot_layer<double>(d_model, 4, 2, 71);
  layer.rope = attention::Rope(16, attention::RopeLayout::half_split);
  const Matrix<double> x = support::random_matrix<double>(3, d_model, 72);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { (void)layer.forward(x); }),
            "attention::MultiHeadAttention::forward: rope->head_dim() (= 16) must equal head_dim "
            "(= 8)");
  EXPECT_EQ(message_of<attention::ShapeError>([&] { (void)layer.head_weights(x); }),
            "attention::MultiHeadAttention::head_weights: rope->head_dim() (= 16) must equal "
            "head_dim (= 8)");
  EXPECT_EQ(message_of<attention::ShapeError>(
                [&] { (void)attention::multi_head_attention_backward(layer, x, x); }),
            "attention::multi_head_attention_backward: rope->head_dim() (= 16) must equal "
            "head_dim (= 8)");
}

TEST(MultiHeadPositionsChecks, AlibiNeedsOneFiniteSlopePerQueryHead) {
  MultiHeadAttention<float> layer = support::glorot_layer<float>(d_model, 4, 1, 73);
  const Matrix<float> x = support::random_matrix<float>(3, d_model, 74);
  layer.alibi_slopes = attention::alibi_slopes(layer.num_kv_heads());  // one, not four
  EXPECT_EQ(message_of<attention::ShapeError>([&] { (void)layer.forward(x); }),
            "attention::MultiHeadAttention::forward: alibi_slopes.size() (= 1) must equal "
            "num_heads (= 4)");
  layer.alibi_slopes = {0.5, 0.25, std::numeric_limits<double>::infinity(), 0.0625};
  EXPECT_EQ(message_of<std::invalid_argument>([&] { (void)layer.forward(x); }),
            "attention::MultiHeadAttention::forward: alibi_slopes[2] (= inf) must be finite");
  layer.alibi_slopes = attention::alibi_slopes(layer.num_heads());
  EXPECT_NO_THROW((void)layer.forward(x));
}

TEST(MultiHeadPositionsChecks, SoftcapMustBePositiveAndFiniteInTheScalarType) {
  MultiHeadAttention<float> layer = support::glorot_layer<float>(d_model, 4, 4, 75);
  const Matrix<float> x = support::random_matrix<float>(3, d_model, 76);
  layer.softcap = 0.0;
  EXPECT_EQ(message_of<std::invalid_argument>([&] { (void)layer.forward(x); }),
            "attention::MultiHeadAttention::forward: softcap (= 0) must be positive and finite in "
            "the scalar type");
  for (const double cap : {-1.0, std::numeric_limits<double>::quiet_NaN(), 1e39 /* inf in float */,
                           1e-40 /* below float's smallest normal */}) {
    layer.softcap = cap;
    EXPECT_THROW((void)layer.forward(x), std::invalid_argument) << cap;
    EXPECT_THROW((void)attention::multi_head_attention_backward(layer, x, x), std::invalid_argument)
        << cap;
  }
  layer.softcap = 50.0;
  EXPECT_NO_THROW((void)layer.forward(x));
}

// --- PositionFeatures on their own ------------------------------------------------------------

TEST(PositionFeatures, CheckFitsNamesTheCallerAndTheScalarTypeMatters) {
  attention::PositionFeatures f;
  EXPECT_NO_THROW(f.check_fits<float>("f", 4, 16));  // all off
  f.rope = attention::Rope(8, attention::RopeLayout::interleaved);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { f.check_fits<float>("f", 4, 16); }),
            "attention::f: rope->head_dim() (= 8) must equal head_dim (= 16)");
  f.rope.reset();
  f.alibi_slopes = {0.5, 0.25};
  EXPECT_EQ(message_of<attention::ShapeError>([&] { f.check_fits<float>("f", 4, 16); }),
            "attention::f: alibi_slopes.size() (= 2) must equal num_heads (= 4)");
  f.alibi_slopes.clear();
  f.softcap = 1e39;  // finite in double, infinite in float
  EXPECT_NO_THROW(f.check_fits<double>("f", 4, 16));
  EXPECT_EQ(f.resolved_softcap<double>("f"), 1e39);
  EXPECT_EQ(message_of<std::invalid_argument>([&] { f.check_fits<float>("f", 4, 16); }),
            "attention::f: softcap (= 1e+39) must be positive and finite in the scalar type");
  f.softcap.reset();
  EXPECT_EQ(f.resolved_softcap<float>("f"), 0.0f);
}

// rotate() is RoPE on every head at the given first positions (reference::rope written out), and
// rotate_back() undoes it.
TEST(PositionFeatures, RotateAndRotateBack) {
  attention::PositionFeatures f;
  f.rope = attention::Rope(4, attention::RopeLayout::half_split);
  const Matrix<double> q0 = support::random_matrix<double>(3, 8, 90);  // two heads of 4
  const Matrix<double> k0 = support::random_matrix<double>(5, 4, 91);  // one head
  Matrix<double> q = q0, k = k0;
  f.rotate(q, 7, k, 2);
  for (Index h = 0; h < 2; ++h) {
    EXPECT_TRUE(
        support::is_near(q.middleCols(4 * h, 4),
                         ref::rope(ref::to_real(q0.middleCols(4 * h, 4)), false, 10000, 4, 7),
                         support::tolerance<double>()));
  }
  EXPECT_TRUE(support::is_near(k, ref::rope(ref::to_real(k0), false, 10000, 4, 2),
                               support::tolerance<double>()));
  f.rotate_back(q, 7, k, 2);
  EXPECT_TRUE(support::is_near(q, q0, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(k, k0, support::tolerance<double>()));
  f.rope.reset();
  f.rotate(q, 7, k, 2);  // without rope: nothing
  EXPECT_TRUE(support::is_near(k, k0, support::tolerance<double>()));
}

// with_head_mask passes the call's mask as it is without slopes, and `mask & alibi(slope_h)` with
// them: head 1's weights are the reference's with its slope.
TEST(PositionFeatures, WithHeadMaskAddsEachHeadsSlope) {
  attention::PositionFeatures f;
  f.with_head_mask(1, attention::causal, [](const auto& mask) {
    EXPECT_TRUE((std::is_same_v<std::decay_t<decltype(mask)>, attention::CausalMask>));
  });
  f.alibi_slopes = {0.5, 2.0};
  const Matrix<double> q = support::random_matrix<double>(4, 3, 92);
  const Matrix<double> k = support::random_matrix<double>(6, 3, 93);
  f.with_head_mask(1, attention::causal, [&](const auto& mask) {
    EXPECT_TRUE(support::is_near(
        attention::attention_weights(q, k, mask),
        ref::weights(ref::to_real(q), ref::to_real(k),
                     ref::Mask::both({ref::Mask::causal(), ref::Mask::alibi(2.0)})),
        support::tolerance<double>()));
  });
}

}  // namespace
}  // namespace multi_head_positions_test
