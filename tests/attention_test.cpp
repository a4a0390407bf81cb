// SPDX-License-Identifier: MIT
// Tests for attention/attention.hpp, the umbrella header: including it alone brings in every public
// header (a name from each is used below, so a header dropped from the umbrella fails to compile),
// and a call through it gives the answer written out by hand.

#include <gtest/gtest.h>

#include <attention/attention.hpp>
#include <type_traits>

namespace attention_test {
namespace {

// One public name of each header the umbrella includes.
static_assert(std::is_class_v<attention::ShapeError>);                 // errors.hpp
static_assert(std::is_enum_v<attention::Isa>);                         // isa.hpp
static_assert(std::is_class_v<attention::KVCache<float>>);             // kv_cache.hpp
static_assert(attention::is_low_precision_v<Eigen::bfloat16>);         // low_precision.hpp
static_assert(attention::is_mask_v<attention::CausalMask>);            // mask.hpp
static_assert(std::is_class_v<attention::MultiHeadAttention<float>>);  // multi_head.hpp
static_assert(std::is_class_v<attention::MultiHeadGradients<float>>);  // multi_head_backward
static_assert(std::is_class_v<attention::PositionFeatures>);           // multi_head_positions
static_assert(std::is_class_v<attention::MultiHeadShape>);             // multi_head_shape.hpp
static_assert(std::is_class_v<attention::MultiHeadWeights<float>>);    // multi_head_weights
static_assert(std::is_class_v<attention::Options>);                    // options.hpp
static_assert(std::is_class_v<attention::PartialAttention<float>>);    // partial.hpp
static_assert(std::is_class_v<attention::Rope>);                       // rope.hpp
static_assert(
    std::is_class_v<attention::AttentionGradients<float>>);     // scaled_dot_product_backward
static_assert(std::is_same_v<attention::Index, Eigen::Index>);  // types.hpp
#if !defined(ATTENTION_VERSION_MAJOR)                           // version.hpp
#error "attention/attention.hpp does not bring in attention/version.hpp"
#endif

TEST(AttentionHeader, EveryPublicHeaderThroughTheUmbrella) {
  // alibi.hpp, softmax.hpp, projection.hpp, scratch.hpp: functions, named here.
  EXPECT_EQ(attention::alibi_slopes(1).size(), 1u);
  const attention::Matrix<double> equal = attention::Matrix<double>::Zero(1, 2);
  EXPECT_EQ(attention::softmax_rows(equal)(0, 1), 0.5);  // exp(0) / (exp(0) + exp(0))
  attention::Matrix<double> x(1, 2), b(1, 2);
  x << 1.0, 2.0;
  b << 0.5, -0.5;
  const attention::Matrix<double> y =
      attention::project(x, attention::Matrix<double>::Identity(2, 2), b);  // x I + b
  EXPECT_EQ(y(0, 0), 1.5);
  EXPECT_EQ(y(0, 1), 1.5);
  attention::release_scratch();
}

// One query of score 0 against two keys: equal weights 1/2 (exact in binary), so the output is the
// mean of the values, 3; under the causal mask the first query sees only key 0 (weight exactly 1).
TEST(AttentionHeader, CallThroughTheUmbrellaGivesTheWrittenOutAnswer) {
  const attention::Matrix<float> q = attention::Matrix<float>::Zero(2, 1);
  const attention::Matrix<float> k = attention::Matrix<float>::Ones(2, 1);
  attention::Matrix<float> v(2, 1);
  v << 2.0f, 4.0f;
  const attention::Matrix<float> out = attention::scaled_dot_product_attention(q, k, v);
  EXPECT_EQ(out(0, 0), 3.0f);
  EXPECT_EQ(out(1, 0), 3.0f);
  const attention::Matrix<float> causal =
      attention::scaled_dot_product_attention(q, k, v, attention::causal);
  EXPECT_EQ(causal(0, 0), 2.0f);
  EXPECT_EQ(causal(1, 0), 3.0f);
}

}  // namespace
}  // namespace attention_test
