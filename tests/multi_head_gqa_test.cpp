// SPDX-License-Identifier: MIT
// Tests for grouped-query and multi-query attention in MultiHeadAttention
// (attention/multi_head.hpp) and its backward (attention/multi_head_backward.hpp): the forward
// against the long-double reference, which expands K and V to one head per query head explicitly
// (repeat_kv_heads, as PyTorch's repeat_interleave), for num_kv_heads in {1 (MQA), 2, num_heads};
// the kernel packing K once per K/V head; parameter shapes, counts, initialisation and checks; and
// the gradients of the smaller w_k, w_v, b_k, b_v against central finite differences.

#include <gtest/gtest.h>

#include <attention/kernels/flash.hpp>
#include <attention/multi_head.hpp>
#include <attention/multi_head_backward.hpp>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/gradient_check.hpp"
#include "support/layers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using support::message_of;

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::MultiHeadAttention;
using RealMatrix = ref::Matrix;
using support::parameters_of;
using support::random_layer;

template <typename T>
class GroupedQueryAttention : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(GroupedQueryAttention, Scalars, support::ScalarNames);

// (d_model, num_heads, num_kv_heads, L): MQA, GQA and plain MHA, head_dim 1, one token, and
// lengths across the kernel's 32- or 64-query tiles.
const std::tuple<Index, Index, Index, Index> gqa_shapes[] = {
    {16, 4, 1, 7}, {16, 4, 2, 17}, {16, 4, 4, 5}, {24, 6, 2, 1},
    {8, 8, 2, 9},  {32, 8, 1, 70}, {32, 4, 2, 40}};

TYPED_TEST(GroupedQueryAttention, SelfAttentionMatchesReferenceWithRepeatedHeads) {
  using T = TypeParam;
  unsigned seed = 1000;
  for (const auto& [d_model, num_heads, num_kv_heads, l] : gqa_shapes) {
    SCOPED_TRACE(::testing::Message() << "d_model " << d_model << " heads " << num_heads
                                      << " kv heads " << num_kv_heads << " L " << l);
    const MultiHeadAttention<T> layer =
        random_layer<T>(d_model, num_heads, num_kv_heads, seed += 10);
    const Matrix<T> x = support::random_matrix<T>(l, d_model, seed + 9);
    const RealMatrix rx = ref::to_real(x);
    const auto p = parameters_of(layer);
    EXPECT_TRUE(support::is_near(layer.forward(x), ref::multi_head(rx, rx, rx, p),
                                 support::tolerance<T>()));
    EXPECT_TRUE(support::is_near(layer.forward(x, attention::causal),
                                 ref::multi_head(rx, rx, rx, p, ref::Mask::causal()),
                                 support::tolerance<T>()));
  }
}

TYPED_TEST(GroupedQueryAttention, CrossAttentionMatchesReferenceWithRepeatedHeads) {
  using T = TypeParam;
  for (const Index num_kv_heads : {1, 2, 6}) {
    for (const auto& [l, s] : {std::pair<Index, Index>{5, 9}, {40, 3}, {1, 70}}) {
      SCOPED_TRACE(::testing::Message() << "kv heads " << num_kv_heads << " L " << l << " S " << s);
      const MultiHeadAttention<T> layer = random_layer<T>(12, 6, num_kv_heads, 1100);
      const Matrix<T> query = support::random_matrix<T>(l, 12, 1110);
      const Matrix<T> key = support::random_matrix<T>(s, 12, 1111);
      const Matrix<T> value = support::random_matrix<T>(s, 12, 1112);
      const RealMatrix rq = ref::to_real(query), rk = ref::to_real(key), rv = ref::to_real(value);
      const auto p = parameters_of(layer);
      EXPECT_TRUE(support::is_near(layer.forward(query, key, value), ref::multi_head(rq, rk, rv, p),
                                   support::tolerance<T>()));
      const support::BoolMatrix visible = support::random_keep(l, s, 1113, 0.6);
      EXPECT_TRUE(support::is_near(layer.forward(query, key, value, attention::keep(visible)),
                                   ref::multi_head(rq, rk, rv, p, ref::Mask::keep(visible)),
                                   support::tolerance<T>()));
    }
  }
}

TYPED_TEST(GroupedQueryAttention, HeadWeightsMatchReference) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_layer<T>(16, 4, 2, 1200);
  const Matrix<T> x = support::random_matrix<T>(9, 16, 1210);
  const RealMatrix rx = ref::to_real(x);
  const auto weights = layer.head_weights(x, attention::causal);
  const auto expected = ref::multi_head_weights(rx, rx, parameters_of(layer), ref::Mask::causal());
  ASSERT_EQ(weights.size(), 4u);
  for (std::size_t h = 0; h < 4; ++h) {
    SCOPED_TRACE(::testing::Message() << "head " << h);
    EXPECT_TRUE(support::is_near(weights[h], expected[h], support::tolerance<T>()));
  }
}

// The heads of a group share K and V but not their queries: with w_q's columns of head 1 copied
// from head 0 (same K/V head 0), heads 0 and 1 give the same pattern; head 2 (K/V head 1) does not.
TYPED_TEST(GroupedQueryAttention, HeadsOfAGroupShareKeys) {
  using T = TypeParam;
  MultiHeadAttention<T> layer = random_layer<T>(16, 4, 2, 1300);
  layer.w_q.middleCols(4, 4) = layer.w_q.middleCols(0, 4);
  layer.b_q.segment(4, 4) = layer.b_q.segment(0, 4);
  layer.w_q.middleCols(8, 4) = layer.w_q.middleCols(0, 4);
  layer.b_q.segment(8, 4) = layer.b_q.segment(0, 4);
  const Matrix<T> x = support::random_matrix<T>(6, 16, 1310);
  const auto weights = layer.head_weights(x);
  EXPECT_TRUE(support::is_near(weights[1], weights[0], 0));
  EXPECT_FALSE(support::is_near(weights[2], weights[0], 1e-3));
}

/// The MHA layer (d_model 16, 4 heads) whose w_k, w_v, b_k, b_v repeat the K/V heads of `gqa`
/// (4 heads, 2 K/V heads): query head h gets a copy of K/V head h / 2.
template <typename T>
MultiHeadAttention<T> with_repeated_key_value_heads(const MultiHeadAttention<T>& gqa) {
  MultiHeadAttention<T> mha(16, 4);
  mha.w_q = gqa.w_q;
  mha.w_o = gqa.w_o;
  mha.b_q = gqa.b_q;
  mha.b_o = gqa.b_o;
  for (Index h = 0; h < 4; ++h) {
    mha.w_k.middleCols(4 * h, 4) = gqa.w_k_head(h / 2);
    mha.w_v.middleCols(4 * h, 4) = gqa.w_v_head(h / 2);
    mha.b_k.segment(4 * h, 4) = gqa.b_k.segment(4 * (h / 2), 4);
    mha.b_v.segment(4 * h, 4) = gqa.b_v.segment(4 * (h / 2), 4);
  }
  return mha;
}

// With every K/V head equal to a copy, a GQA layer is the MHA layer whose w_k and w_v repeat the
// K/V heads' columns: the same numbers computed two ways, to rounding.
TYPED_TEST(GroupedQueryAttention, EqualsMultiHeadWithRepeatedKeyValueWeights) {
  using T = TypeParam;
  const MultiHeadAttention<T> gqa = random_layer<T>(16, 4, 2, 1400);
  const MultiHeadAttention<T> mha = with_repeated_key_value_heads(gqa);
  const Matrix<T> x = support::random_matrix<T>(11, 16, 1410);
  EXPECT_TRUE(support::is_near(gqa.forward(x, attention::causal), mha.forward(x, attention::causal),
                               support::tolerance<T>()));
}

// --- The kernel: K packed once per K/V head ---------------------------------------------------

TEST(GroupedQueryKernel, PacksKeysOncePerKeyValueHead) {
  // 8 query heads over 2 K/V heads, every head of a group pointing at the same K/V columns. The
  // workspace's packed-K buffer then holds whole K/V heads' panels, at most 2 (the kernel packs a
  // few K/V heads at a time), never one per query head, and the output matches the reference head
  // by head.
  // The tile sizes of the instruction-set path this process runs (kernels/dispatch.hpp).
  const auto G = attention::detail::kernels::active_tile_sizes<float>();
  const Index num_heads = 8, num_kv_heads = 2, d = 16, l = 37, s = 70;
  const Matrix<float> q = support::random_matrix<float>(l, num_heads * d, 1500);
  const Matrix<float> k = support::random_matrix<float>(s, num_kv_heads * d, 1501);
  const Matrix<float> v = support::random_matrix<float>(s, num_kv_heads * d, 1502);
  Matrix<float> out(l, num_heads * d);
  std::vector<attention::detail::flash::HeadOperands<float>> heads;
  for (Index h = 0; h < num_heads; ++h) {
    const Index g = h / (num_heads / num_kv_heads);
    heads.push_back({q.data() + h * d, q.outerStride(), k.data() + g * d, k.outerStride(),
                     v.data() + g * d, v.outerStride(), out.data() + h * d, out.outerStride(),
                     nullptr});
  }
  attention::detail::flash::CallWorkspace<float> workspace;
  const attention::detail::flash::ScoreRules<float> rules{0.25f, 0.0f};  // scale, no softcap
  attention::detail::flash::multi_head_attention(heads.data(), num_heads, l, s, d, d, rules,
                                                 attention::causal, workspace,
                                                 num_heads / num_kv_heads);
  const Index key_blocks = (s + G.block_cols - 1) / G.block_cols;
  const Index panel = key_blocks * d * G.block_cols;
  EXPECT_EQ(workspace.k_packed.size() % panel, 0);
  EXPECT_GE(workspace.k_packed.size(), panel);
  EXPECT_LE(workspace.k_packed.size(), num_kv_heads * panel);
  for (Index h = 0; h < num_heads; ++h) {
    SCOPED_TRACE(::testing::Message() << "head " << h);
    const Index g = h / (num_heads / num_kv_heads);
    EXPECT_TRUE(support::is_near(
        out.middleCols(h * d, d),
        ref::attention(ref::to_real(q.middleCols(h * d, d)), ref::to_real(k.middleCols(g * d, d)),
                       ref::to_real(v.middleCols(g * d, d)), ref::Mask::causal(), 0.25L),
        support::tolerance<float>()));
  }
}

// --- Sizes, counts, initialisation, checks ----------------------------------------------------

TEST(GroupedQueryShape, ParameterCounts) {
  // Llama-3-8B attention: d_model 4096, 32 query heads, 8 K/V heads of 128. W_Q and W_O are
  // 4096 x 4096 = 16,777,216 each, W_K and W_V 4096 x 1024 = 4,194,304 each: 41,943,040 weights;
  // biases 4096 + 1024 + 1024 + 4096 = 10,240.
  const attention::MultiHeadShape shape(4096, 32, 8);
  EXPECT_EQ(shape.num_kv_heads(), 8);
  EXPECT_EQ(shape.group_size(), 4);
  EXPECT_EQ(shape.kv_dim(), 1024);
  EXPECT_EQ(shape.weight_count(), std::int64_t{41943040});
  EXPECT_EQ(shape.bias_count(), std::int64_t{10240});
  EXPECT_EQ(shape.parameter_count(), std::int64_t{41953280});
  EXPECT_EQ(shape.weights_per_head(), std::int64_t{41943040 / 32});
  // MQA, d_model 8, 4 heads of 2, 1 K/V head: 64 + 16 + 16 + 64 weights, 8 + 2 + 2 + 8 biases.
  const attention::MultiHeadShape mqa(8, 4, 1);
  EXPECT_EQ(mqa.weight_count(), std::int64_t{160});
  EXPECT_EQ(mqa.bias_count(), std::int64_t{20});
  // Without a K/V head count, the counts are those of multi-head attention.
  EXPECT_EQ(attention::MultiHeadShape(8, 2).num_kv_heads(), 2);
  EXPECT_EQ(attention::MultiHeadShape(8, 2, 2).parameter_count(),
            attention::MultiHeadShape(8, 2).parameter_count());
}

TEST(GroupedQueryShape, LayerHasGroupedShapes) {
  const MultiHeadAttention<float> layer(16, 4, 2);
  EXPECT_EQ(layer.num_kv_heads(), 2);
  EXPECT_EQ(layer.kv_dim(), 8);
  EXPECT_EQ(layer.w_q.cols(), 16);
  EXPECT_EQ(layer.w_k.rows(), 16);
  EXPECT_EQ(layer.w_k.cols(), 8);
  EXPECT_EQ(layer.w_v.cols(), 8);
  EXPECT_EQ(layer.w_o.rows(), 16);
  EXPECT_EQ(layer.b_k.cols(), 8);
  EXPECT_EQ(layer.b_v.cols(), 8);
  EXPECT_EQ(layer.b_q.cols(), 16);
  // 2 * 256 + 2 * 128 weights, 2 * 16 + 2 * 8 biases.
  EXPECT_EQ(layer.parameter_count(), std::int64_t{768 + 48});
  EXPECT_EQ(layer.shape().num_kv_heads(), 2);
}

TEST(GroupedQueryShape, QueryHeadsMapToKeyValueHeadsInRepeatInterleaveOrder) {
  const MultiHeadAttention<double> layer(12, 6, 2);
  const Index expected[] = {0, 0, 0, 1, 1, 1};
  for (Index h = 0; h < 6; ++h) EXPECT_EQ(layer.kv_head_of(h), expected[h]) << "head " << h;
  const MultiHeadAttention<double> mqa(12, 6, 1);
  for (Index h = 0; h < 6; ++h) EXPECT_EQ(mqa.kv_head_of(h), 0);
  const MultiHeadAttention<double> mha(12, 6);
  for (Index h = 0; h < 6; ++h) EXPECT_EQ(mha.kv_head_of(h), h);
  EXPECT_THROW((void)layer.kv_head_of(6), attention::ShapeError);
}

TEST(GroupedQueryShape, KeyValueHeadSlicesTakeKeyValueHeadIndex) {
  const MultiHeadAttention<double> layer = random_layer<double>(12, 6, 2, 1600);
  for (Index g = 0; g < 2; ++g) {
    EXPECT_EQ(layer.w_k_head(g).data(), layer.w_k.data() + 2 * g);  // head_dim 2; a view
    EXPECT_EQ(layer.w_v_head(g).data(), layer.w_v.data() + 2 * g);
    EXPECT_EQ(layer.w_k_head(g).cols(), 2);
  }
  EXPECT_NO_THROW((void)layer.w_q_head(5));
  EXPECT_THROW((void)layer.w_k_head(2), attention::ShapeError);
  EXPECT_THROW((void)layer.w_v_head(-1), attention::ShapeError);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { (void)layer.w_k_head(2); }),
            "attention::MultiHeadAttention::head: key/value head index (= 2) must be at least 0 "
            "and less than num_kv_heads() (= 2)");
}

TEST(GroupedQueryShape, ThrowsWhenKeyValueHeadsDoNotDivideHeads) {
  EXPECT_THROW(MultiHeadAttention<double>(16, 4, 3), attention::ShapeError);
  EXPECT_EQ(message_of<attention::ShapeError>([] { MultiHeadAttention<double>(16, 4, 3); }),
            "attention::MultiHeadAttention: num_kv_heads (= 3) must divide num_heads (= 4)");
  EXPECT_EQ(message_of<attention::ShapeError>([] { MultiHeadAttention<double>(16, 4, 8); }),
            "attention::MultiHeadAttention: num_kv_heads (= 8) must divide num_heads (= 4)");
  EXPECT_EQ(message_of<attention::ShapeError>([] { attention::MultiHeadShape(16, 4, 3); }),
            "attention::MultiHeadShape: num_kv_heads (= 3) must divide num_heads (= 4)");
}

TEST(GroupedQueryShape, ThrowsOnNonPositiveKeyValueHeads) {
  EXPECT_EQ(message_of<attention::ShapeError>([] { MultiHeadAttention<double>(16, 4, 0); }),
            "attention::MultiHeadAttention: num_kv_heads (= 0) must be at least 1");
  EXPECT_THROW(MultiHeadAttention<double>(16, 4, -2), attention::ShapeError);
  EXPECT_THROW(attention::MultiHeadShape(16, 4, 0), attention::ShapeError);
}

TEST(GroupedQueryShape, ResetParametersUsesEachMatrixShapeForItsBound) {
  MultiHeadAttention<double> layer(16, 4, 1);  // kv_dim 4
  layer.w_k.resize(2, 2);                      // restored by reset_parameters
  layer.reset_parameters(7);
  ASSERT_EQ(layer.w_k.rows(), 16);
  ASSERT_EQ(layer.w_k.cols(), 4);
  EXPECT_EQ(layer.b_k.cols(), 4);
  EXPECT_TRUE(layer.b_k.isZero(0) && layer.b_v.isZero(0));
  // Glorot: a = sqrt(6 / (rows + cols)): sqrt(6 / 32) = 0.433 for w_q, w_o; sqrt(6 / 20) = 0.548
  // for w_k, w_v. With 64 draws the largest |w| exceeds 0.9 a with probability 1 - 0.9^64 > 0.998,
  // so w_k's draws reach past w_q's bound.
  const double bound_q = std::sqrt(6.0 / 32.0), bound_k = std::sqrt(6.0 / 20.0);
  EXPECT_LE(layer.w_q.cwiseAbs().maxCoeff(), bound_q);
  EXPECT_LE(layer.w_o.cwiseAbs().maxCoeff(), bound_q);
  EXPECT_LE(layer.w_k.cwiseAbs().maxCoeff(), bound_k);
  EXPECT_LE(layer.w_v.cwiseAbs().maxCoeff(), bound_k);
  EXPECT_GT(layer.w_k.cwiseAbs().maxCoeff(), 0.9 * bound_k);
  EXPECT_GT(layer.w_v.cwiseAbs().maxCoeff(), 0.9 * bound_k);
  EXPECT_GT(layer.w_k.cwiseAbs().maxCoeff(), bound_q);
  MultiHeadAttention<double> again(16, 4, 1);
  again.reset_parameters(7);
  EXPECT_TRUE(support::is_near(again.w_v, layer.w_v, 0));
}

TEST(GroupedQueryShape, ChecksTheGroupedParameterShapes) {
  MultiHeadAttention<double> layer = random_layer<double>(16, 4, 2, 1700);
  const Matrix<double> x = support::random_matrix<double>(3, 16, 1701);
  EXPECT_NO_THROW(layer.check_parameters("test"));
  EXPECT_NO_THROW((void)layer.forward(x));
  MultiHeadAttention<double> broken = layer;
  broken.w_k = Matrix<double>::Zero(16, 16);  // the shape of a non-grouped layer
  EXPECT_EQ(message_of<attention::ShapeError>([&] { (void)broken.forward(x); }),
            "attention::MultiHeadAttention::forward: w_k.cols() (= 16) must equal kv_dim (= 8)");
  EXPECT_EQ(message_of<attention::ShapeError>([&] { broken.check_parameters("caller"); }),
            "attention::caller: w_k.cols() (= 16) must equal kv_dim (= 8)");
  broken = layer;
  broken.w_v = Matrix<double>::Zero(12, 8);
  EXPECT_THROW((void)broken.forward(x), attention::ShapeError);
  broken = layer;
  broken.b_v = attention::RowVector<double>::Zero(16);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { (void)broken.head_weights(x); }),
            "attention::MultiHeadAttention::head_weights: b_v.cols() (= 16) must equal kv_dim "
            "(= 8)");
  broken = layer;
  broken.b_k = attention::RowVector<double>::Zero(7);
  EXPECT_THROW((void)attention::multi_head_attention_backward(broken, x, x), attention::ShapeError);
  broken = layer;
  broken.w_o = Matrix<double>::Zero(16, 8);
  EXPECT_EQ(message_of<attention::ShapeError>(
                [&] { (void)attention::multi_head_attention_backward(broken, x, x); }),
            "attention::multi_head_attention_backward: w_o.cols() (= 8) must equal d_model (= 16)");
}

// --- Backward: gradients of the grouped K/V weights --------------------------------------------

template <typename T>
class GroupedQueryBackward : public ::testing::Test {};
using CheckScalars = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(GroupedQueryBackward, CheckScalars, support::ScalarNames);

template <typename T, typename MakeMask>
void expect_gqa_gradients_match(Index num_queries, Index num_keys, Index num_kv_heads, bool self,
                                unsigned seed, const MakeMask& make_mask) {
  SCOPED_TRACE(::testing::Message() << (self ? "self" : "cross") << ", L = " << num_queries
                                    << ", S = " << num_keys << ", kv heads = " << num_kv_heads);
  const Index d_model = 8, num_heads = 4;
  MultiHeadAttention<T> layer = random_layer<T>(d_model, num_heads, num_kv_heads, seed);
  Matrix<T> query = support::random_matrix<T>(num_queries, d_model, seed + 10);
  Matrix<T> key = support::random_matrix<T>(num_keys, d_model, seed + 11);
  Matrix<T> value = support::random_matrix<T>(num_keys, d_model, seed + 12);
  const Matrix<T> d_out = support::random_matrix<T>(num_queries, d_model, seed + 13);
  constexpr long double bound = support::gradient_bound<T>();
  attention::MultiHeadGradients<T> grads;
  if (self) {
    grads = attention::multi_head_attention_backward(layer, query, d_out, make_mask());
    const auto loss = [&] {
      return support::weighted_sum(d_out, layer.forward(query, make_mask()));
    };
    EXPECT_TRUE(support::gradient_matches(loss, query, grads.dx, bound)) << "dx";
  } else {
    grads = attention::multi_head_attention_backward(layer, query, key, value, d_out, make_mask());
  }
  ASSERT_EQ(grads.dw_k.rows(), d_model);
  ASSERT_EQ(grads.dw_k.cols(), layer.kv_dim());
  ASSERT_EQ(grads.dw_v.cols(), layer.kv_dim());
  ASSERT_EQ(grads.db_k.cols(), layer.kv_dim());
  ASSERT_EQ(grads.db_v.cols(), layer.kv_dim());
  ASSERT_EQ(grads.dw_q.cols(), d_model);
  const auto loss = [&] {
    return self ? support::weighted_sum(d_out, layer.forward(query, make_mask()))
                : support::weighted_sum(d_out, layer.forward(query, key, value, make_mask()));
  };
  if (!self) {
    EXPECT_TRUE(support::gradient_matches(loss, query, grads.d_query, bound)) << "d_query";
    EXPECT_TRUE(support::gradient_matches(loss, key, grads.d_key, bound)) << "d_key";
    EXPECT_TRUE(support::gradient_matches(loss, value, grads.d_value, bound)) << "d_value";
  }
  support::expect_parameter_gradients_match(loss, layer, grads);
}

TYPED_TEST(GroupedQueryBackward, MultiQuerySelfAttentionCausal) {
  expect_gqa_gradients_match<TypeParam>(5, 5, 1, true, 1800, [] { return attention::causal; });
}

TYPED_TEST(GroupedQueryBackward, GroupedSelfAttentionKeepWithFullyMaskedRow) {
  support::BoolMatrix visible = support::random_keep(5, 5, 1810, 0.6);
  visible.row(3).setConstant(false);
  expect_gqa_gradients_match<TypeParam>(5, 5, 2, true, 1820,
                                        [&] { return attention::keep(visible); });
}

TYPED_TEST(GroupedQueryBackward, GroupedCrossAttention) {
  expect_gqa_gradients_match<TypeParam>(3, 6, 2, false, 1830, [] { return attention::causal; });
  expect_gqa_gradients_match<TypeParam>(4, 3, 1, false, 1840, [] { return attention::NoMask{}; });
}

// A K/V head's gradient is the sum over its query group: for the MHA layer with repeated K/V
// weights (equal function), the GQA gradient of K/V head g equals the sum of the MHA gradients of
// the query heads' copies.
TEST(GroupedQueryBackwardSums, KeyValueGradientIsTheSumOverTheGroup) {
  const MultiHeadAttention<double> gqa = random_layer<double>(16, 4, 2, 1900);
  const MultiHeadAttention<double> mha = with_repeated_key_value_heads(gqa);
  const Matrix<double> x = support::random_matrix<double>(6, 16, 1910);
  const Matrix<double> d_out = support::random_matrix<double>(6, 16, 1911);
  const auto g = attention::multi_head_attention_backward(gqa, x, d_out, attention::causal);
  const auto m = attention::multi_head_attention_backward(mha, x, d_out, attention::causal);
  for (Index kv = 0; kv < 2; ++kv) {
    const Matrix<double> sum_w_k = m.dw_k.middleCols(8 * kv, 4) + m.dw_k.middleCols(8 * kv + 4, 4);
    const Matrix<double> sum_b_v = m.db_v.segment(8 * kv, 4) + m.db_v.segment(8 * kv + 4, 4);
    EXPECT_TRUE(support::is_near(g.dw_k.middleCols(4 * kv, 4), sum_w_k, 1e-13));
    EXPECT_TRUE(support::is_near(g.db_v.segment(4 * kv, 4), sum_b_v, 1e-13));
  }
  EXPECT_TRUE(support::is_near(g.dx, m.dx, 1e-13));
  EXPECT_TRUE(support::is_near(g.dw_q, m.dw_q, 1e-13));
}

}  // namespace
