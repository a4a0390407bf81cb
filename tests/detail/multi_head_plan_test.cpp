// SPDX-License-Identifier: MIT
// Tests for attention/detail/multi_head_plan.hpp, the one description of a multi-head call up to
// the heads' outputs that the forward, the cache forward, head_weights and the backward share: its
// projected, rotated heads against the formula written out in long double (support/reference.hpp),
// its head numbering (grouped-query), its per-head masks (ALiBi), the heads' outputs and
// log-sum-exps against the reference, the positions through a KVCache, and the order of checks.

#include <gtest/gtest.h>

#include <attention/detail/multi_head_plan.hpp>
#include <attention/multi_head.hpp>
#include <limits>
#include <optional>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::MultiHeadAttention;
using Plan = attention::detail::MultiHeadPlan<double>;

template <typename T>
class MultiHeadPlanTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(MultiHeadPlanTyped, Scalars, support::ScalarNames);

constexpr Index d_model = 16, num_heads = 4, num_kv_heads = 2, head_dim = 4;

/// A layer with every position feature (half-split RoPE, ALiBi and a soft-cap: the last of
/// support::position_features_for_four_heads()), inputs of L queries and S keys, and the
/// reference's projections Q, K, V (long double, not rotated) and positions (lower-right: queries
/// at S - L).
template <typename T>
struct Setting {
  Setting(Index l, Index s, unsigned seed)
      : layer(support::random_layer<T>(d_model, num_heads, num_kv_heads, seed)),
        query(support::random_matrix<T>(l, d_model, seed + 1)),
        key(support::random_matrix<T>(s, d_model, seed + 2)),
        value(support::random_matrix<T>(s, d_model, seed + 3)),
        positions(support::reference_positions(features, s - l, 0)) {
    support::set_positions(layer, features);
    const auto p = support::parameters_of(layer);
    q = ref::project(ref::to_real(query), p.w_q, p.b_q);
    k = ref::project(ref::to_real(key), p.w_k, p.b_k);
    v = ref::project(ref::to_real(value), p.w_v, p.b_v);
  }

  support::PositionFeatures features = support::position_features_for_four_heads()[3];
  MultiHeadAttention<T> layer;
  Matrix<T> query, key, value;
  ref::Positions positions;
  ref::Matrix q, k, v;
};

// Q_h = R(i + S - L) (query W_q + b_q)_h, K_g = R(j) (key W_k + b_k)_g, V_g = (value W_v + b_v)_g,
// with g = h / 2, each written out in long double.
TYPED_TEST(MultiHeadPlanTyped, HeadsAreTheProjectedRotatedColumns) {
  using T = TypeParam;
  const Index l = 5, s = 9;
  const Setting<T> c(l, s, 100);
  const auto plan = attention::detail::MultiHeadPlan<T>::project(
      "test", c.layer, c.layer, c.query, c.key, c.value, attention::NoMask{});
  ASSERT_EQ(plan.num_queries(), l);
  ASSERT_EQ(plan.num_keys(), s);
  for (Index h = 0; h < num_heads; ++h) {
    SCOPED_TRACE(::testing::Message() << "head " << h);
    const Index g = h / 2;
    EXPECT_EQ(plan.kv_column(h), g * head_dim);
    EXPECT_TRUE(support::is_near(plan.q_head(h),
                                 ref::head_block(c.q, h, head_dim, c.positions, s - l),
                                 support::tolerance<T>()));
    EXPECT_TRUE(support::is_near(plan.k_head(h), ref::head_block(c.k, g, head_dim, c.positions, 0),
                                 support::tolerance<T>()));
    EXPECT_TRUE(support::is_near(plan.v_head(h), ref::columns(c.v, g * head_dim, head_dim),
                                 support::tolerance<T>()));
  }
}

// Each head's output and log-sum-exp, with its own ALiBi bias and the soft-cap, against
// reference::attention and reference::row_logsumexp; L > 64 and S > 64 cross the kernel's tiles.
TYPED_TEST(MultiHeadPlanTyped, AttendGivesEachHeadsOutputAndLogSumExp) {
  using T = TypeParam;
  const Index l = 70, s = 75;
  const Setting<T> c(l, s, 200);
  const auto plan = attention::detail::MultiHeadPlan<T>::project(
      "test", c.layer, c.layer, c.query, c.key, c.value, attention::causal_lower_right);
  Matrix<T> heads(l, d_model), lse(num_heads, l);
  plan.attend(heads, attention::causal_lower_right, lse.data());
  for (Index h = 0; h < num_heads; ++h) {
    SCOPED_TRACE(::testing::Message() << "head " << h);
    const ref::Matrix q_h = ref::head_block(c.q, h, head_dim, c.positions, s - l);
    const ref::Matrix k_h = ref::head_block(c.k, h / 2, head_dim, c.positions, 0);
    const ref::Mask mask = ref::head_mask(ref::Mask::causal_lower_right(), h, c.positions);
    const std::optional<ref::Real> cap = c.positions.softcap;
    EXPECT_TRUE(
        support::is_near(heads.middleCols(h * head_dim, head_dim),
                         ref::attention(q_h, k_h, ref::columns(c.v, h / 2 * head_dim, head_dim),
                                        mask, std::nullopt, cap),
                         support::tolerance<T>()));
    EXPECT_TRUE(
        support::is_near(lse.row(h).transpose(),
                         ref::row_logsumexp(ref::masked_scores(q_h, k_h, mask, std::nullopt, cap)),
                         support::tolerance<T>()));
  }
}

// for_each_head visits the heads in order, each with its own slope: head h's weights through
// attention_weights(q_h, k_g, head_mask) are the reference's with alibi(slope_h).
TEST(MultiHeadPlan, ForEachHeadGivesEachHeadItsAlibiMask) {
  MultiHeadAttention<double> layer = support::random_layer<double>(d_model, num_heads, 4, 300);
  support::PositionFeatures f{"alibi"};
  f.alibi_slopes = {1.0, 0.5, 0.25, 0.125};
  support::set_positions(layer, f);
  const Matrix<double> x = support::random_matrix<double>(6, d_model, 301);
  const auto plan = Plan::project("test", layer, layer, x, x, x, attention::causal);
  const ref::Matrix q =
      ref::project(ref::to_real(x), ref::to_real(layer.w_q), ref::to_real(layer.b_q));
  const ref::Matrix k =
      ref::project(ref::to_real(x), ref::to_real(layer.w_k), ref::to_real(layer.b_k));
  std::vector<Index> visited;
  plan.for_each_head(attention::causal, [&](Index h, const auto& head_mask) {
    visited.push_back(h);
    const ref::Mask mask = ref::Mask::both(
        {ref::Mask::causal(), ref::Mask::alibi(f.alibi_slopes[static_cast<std::size_t>(h)])});
    EXPECT_TRUE(
        support::is_near(attention::attention_weights(plan.q_head(h), plan.k_head(h), head_mask),
                         ref::weights(ref::columns(q, h * head_dim, head_dim),
                                      ref::columns(k, h * head_dim, head_dim), mask),
                         support::tolerance<double>()))
        << "head " << h;
  });
  EXPECT_EQ(visited, (std::vector<Index>{0, 1, 2, 3}));
}

// Through a KVCache: new token r is at tokens_seen() + r, and the plan's keys are the cache's rows
// (the new keys rotated at their absolute positions before they were stored).
TEST(MultiHeadPlan, CachePositionsAreAbsolute) {
  MultiHeadAttention<double> layer =
      support::random_layer<double>(d_model, num_heads, num_kv_heads, 400);
  const support::PositionFeatures f = support::position_features_for_four_heads()[0];
  support::set_positions(layer, f);
  attention::KVCache<double> cache(layer.kv_dim(), 16);
  const Matrix<double> x = support::random_matrix<double>(7, d_model, 401);
  (void)layer.forward(x.topRows(4), cache);
  cache.drop_oldest(2);  // tokens 2 and 3 stay, at positions 2 and 3
  const auto plan = Plan::extend_cache("test", layer, layer, x.bottomRows(3), cache,
                                       attention::causal_lower_right);
  EXPECT_EQ(cache.size(), 5);
  EXPECT_EQ(plan.num_keys(), 5);
  const ref::Positions at_4 = support::reference_positions(f, 4, 2);
  const ref::Matrix q =
      ref::project(ref::to_real(x.bottomRows(3)), ref::to_real(layer.w_q), ref::to_real(layer.b_q));
  const ref::Matrix k =
      ref::project(ref::to_real(x.bottomRows(5)), ref::to_real(layer.w_k), ref::to_real(layer.b_k));
  for (Index h = 0; h < num_heads; ++h) {
    EXPECT_TRUE(support::is_near(plan.q_head(h), ref::head_block(q, h, head_dim, at_4, 4),
                                 support::tolerance<double>()));
    EXPECT_TRUE(support::is_near(plan.k_head(h), ref::head_block(k, h / 2, head_dim, at_4, 2),
                                 support::tolerance<double>()));
    EXPECT_EQ(plan.k_head(h).data(), cache.keys().data() + plan.kv_column(h));  // read in place
  }
}

// One check for every call: the weights first, then the position features, then the inputs and
// the mask, all before any work; a cache stays unchanged when a check fails.
TEST(MultiHeadPlan, ChecksParametersThenInputs) {
  MultiHeadAttention<double> layer =
      support::random_layer<double>(d_model, num_heads, num_kv_heads, 500);
  const Matrix<double> x = support::random_matrix<double>(3, d_model, 501);
  layer.alibi_slopes = {0.5};
  layer.b_v.resize(3);
  EXPECT_EQ(support::message_of<attention::ShapeError>(
                [&] { (void)Plan::project("f", layer, layer, x, x, x, attention::NoMask{}); }),
            "attention::f: b_v.cols() (= 3) must equal kv_dim (= 8)");
  layer.b_v.setZero(8);
  EXPECT_EQ(support::message_of<attention::ShapeError>(
                [&] { (void)Plan::project("f", layer, layer, x, x, x, attention::NoMask{}); }),
            "attention::f: alibi_slopes.size() (= 1) must equal num_heads (= 4)");
  layer.alibi_slopes.clear();
  const support::BoolMatrix wrong = support::BoolMatrix::Constant(3, 4, true);
  EXPECT_EQ(support::message_of<attention::ShapeError>([&] {
              (void)Plan::project("f", layer, layer, x, x, x, attention::keep(wrong));
            }).rfind("attention::f: ", 0),
            0u);  // the mask's own message, naming the caller
  attention::KVCache<double> cache(layer.kv_dim(), 4);
  EXPECT_THROW((void)Plan::extend_cache("f", layer, layer, Matrix<double>::Zero(5, d_model), cache,
                                        attention::causal_lower_right),
               std::length_error);
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
}

}  // namespace
