// SPDX-License-Identifier: MIT
// Tests for attention/multi_head.hpp: MultiHeadShape and MultiHeadAttention, against the
// long-double reference (support/reference.hpp), PyTorch's layout and a PyTorch printout.

#include <gtest/gtest.h>

#include <attention/multi_head.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::MultiHeadAttention;
using attention::RowVector;
using RealMatrix = ref::Matrix;
using support::parameters_of;

template <typename T>
MultiHeadAttention<T> random_layer(Index d_model, Index num_heads, unsigned seed) {
  return support::random_layer<T>(d_model, num_heads, num_heads, seed);
}

template <typename T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <typename T>
class MultiHeadAttentionTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(MultiHeadAttentionTyped, Scalars, support::ScalarNames);

// (d_model, num_heads, L): one head, one token, head_dim 1, and sizes across the tiled kernel's
// tiles (48 or 64 queries).
const std::tuple<Index, Index, Index> self_shapes[] = {{6, 1, 7}, {8, 2, 5},   {12, 3, 1},
                                                       {8, 8, 3}, {16, 4, 17}, {32, 4, 70}};

TYPED_TEST(MultiHeadAttentionTyped, SelfAttentionMatchesReference) {
  using T = TypeParam;
  unsigned seed = 10;
  for (const auto& [d_model, num_heads, l] : self_shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "d_model " << d_model << " heads " << num_heads << " L " << l);
    const MultiHeadAttention<T> layer = random_layer<T>(d_model, num_heads, seed += 10);
    const Matrix<T> x = support::random_matrix<T>(l, d_model, seed + 9);
    const RealMatrix rx = ref::to_real(x);
    EXPECT_TRUE(support::is_near(layer.forward(x),
                                 ref::multi_head(rx, rx, rx, parameters_of(layer)),
                                 support::tolerance<T>()));
    EXPECT_TRUE(
        support::is_near(layer.forward(x, attention::causal),
                         ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::causal()),
                         support::tolerance<T>()));
  }
}

TYPED_TEST(MultiHeadAttentionTyped, CrossAttentionMatchesReference) {
  // Queries from one sequence, keys and values from another of a different length (and the key
  // and value inputs differ too), with and without masks.
  using T = TypeParam;
  for (const auto& [l, s] : {std::pair<Index, Index>{5, 9}, {40, 3}, {1, 33}}) {
    SCOPED_TRACE(::testing::Message() << "L " << l << " S " << s);
    const MultiHeadAttention<T> layer = random_layer<T>(12, 3, 100);
    const Matrix<T> query = support::random_matrix<T>(l, 12, 110);
    const Matrix<T> key = support::random_matrix<T>(s, 12, 111);
    const Matrix<T> value = support::random_matrix<T>(s, 12, 112);
    const RealMatrix rq = ref::to_real(query), rk = ref::to_real(key), rv = ref::to_real(value);
    const auto p = parameters_of(layer);
    const Matrix<T> out = layer.forward(query, key, value);
    ASSERT_EQ(out.rows(), l);
    ASSERT_EQ(out.cols(), 12);
    EXPECT_TRUE(support::is_near(out, ref::multi_head(rq, rk, rv, p), support::tolerance<T>()));
    EXPECT_TRUE(support::is_near(layer.forward(query, key, value, attention::causal),
                                 ref::multi_head(rq, rk, rv, p, ref::Mask::causal()),
                                 support::tolerance<T>()));
    const support::BoolMatrix visible = support::random_keep(l, s, 113, 0.6);
    EXPECT_TRUE(support::is_near(layer.forward(query, key, value, attention::keep(visible)),
                                 ref::multi_head(rq, rk, rv, p, ref::Mask::keep(visible)),
                                 support::tolerance<T>()));
  }
}

TYPED_TEST(MultiHeadAttentionTyped, FullyMaskedQueryGetsTheOutputBias) {
  // Every head gives the hidden query 0, so its output is 0 w_o + b_o = b_o.
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_layer<T>(8, 2, 200);
  const Matrix<T> x = support::random_matrix<T>(6, 8, 210);
  support::BoolMatrix visible = support::random_keep(6, 6, 211, 0.7);
  visible.row(2).setConstant(false);
  Matrix<T> b = Matrix<T>::Zero(6, 6);
  b.row(4).setConstant(-std::numeric_limits<T>::infinity());
  const RealMatrix rx = ref::to_real(x);
  const Matrix<T> kept = layer.forward(x, attention::keep(visible));
  const Matrix<T> biased = layer.forward(x, attention::bias(b));
  EXPECT_TRUE(support::is_near(kept.row(2), layer.b_o, 0));
  EXPECT_TRUE(support::is_near(biased.row(4), layer.b_o, 0));
  EXPECT_TRUE(support::is_near(
      kept, ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::keep(visible)),
      support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(
      biased, ref::multi_head(rx, rx, rx, parameters_of(layer), ref::Mask::bias(b)),
      support::tolerance<T>()));
}

TYPED_TEST(MultiHeadAttentionTyped, HeadWeightsMatchReference) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_layer<T>(12, 4, 300);
  const Matrix<T> x = support::random_matrix<T>(9, 12, 310);
  const Matrix<T> memory = support::random_matrix<T>(5, 12, 311);
  const RealMatrix rx = ref::to_real(x), rm = ref::to_real(memory);
  const auto p = parameters_of(layer);
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "unmasked");
    const auto mask = causal ? ref::Mask::causal() : ref::Mask::none();
    const auto self = causal ? layer.head_weights(x, attention::causal) : layer.head_weights(x);
    const auto cross =
        causal ? layer.head_weights(x, memory, attention::causal) : layer.head_weights(x, memory);
    const auto self_expected = ref::multi_head_weights(rx, rx, p, mask);
    const auto cross_expected = ref::multi_head_weights(rx, rm, p, mask);
    ASSERT_EQ(self.size(), 4u);
    ASSERT_EQ(cross.size(), 4u);
    for (std::size_t h = 0; h < 4; ++h) {
      SCOPED_TRACE(::testing::Message() << "head " << h);
      EXPECT_TRUE(support::is_near(self[h], self_expected[h], support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(cross[h], cross_expected[h], support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(support::row_sums(cross[h]), RealMatrix::Ones(9, 1),
                                   support::tolerance<T>()));
    }
  }
}

TYPED_TEST(MultiHeadAttentionTyped, HeadsAreIndependent) {
  // Changing head 1's columns of W_Q changes head 1's pattern and no other.
  using T = TypeParam;
  MultiHeadAttention<T> layer = random_layer<T>(12, 3, 400);
  const Matrix<T> x = support::random_matrix<T>(7, 12, 410);
  const auto before = layer.head_weights(x);
  layer.w_q.middleCols(4, 4) *= T(3);
  const auto after = layer.head_weights(x);
  EXPECT_TRUE(support::is_near(after[0], before[0], 0));
  EXPECT_TRUE(support::is_near(after[2], before[2], 0));
  EXPECT_FALSE(support::is_near(after[1], before[1], 1e-3));
}

TYPED_TEST(MultiHeadAttentionTyped, OneHeadIsProjectedAttention) {
  // With one head: out = attention(x W_q + b_q, x W_k + b_k, x W_v + b_v) W_o + b_o, composed here
  // from the library's own project() and scaled_dot_product_attention().
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_layer<T>(10, 1, 500);
  const Matrix<T> x = support::random_matrix<T>(8, 10, 510);
  const Matrix<T> heads = attention::scaled_dot_product_attention(
      attention::project(x, layer.w_q, layer.b_q), attention::project(x, layer.w_k, layer.b_k),
      attention::project(x, layer.w_v, layer.b_v), attention::causal);
  EXPECT_TRUE(support::is_near(layer.forward(x, attention::causal),
                               attention::project(heads, layer.w_o, layer.b_o),
                               support::tolerance<T>()));
}

TYPED_TEST(MultiHeadAttentionTyped, NonContiguousAndColumnMajorInputs) {
  using T = TypeParam;
  const MultiHeadAttention<T> layer = random_layer<T>(8, 2, 600);
  const Matrix<T> storage = support::random_matrix<T>(12, 20, 610);
  const auto query = storage.block(1, 3, 6, 8);   // row stride 20
  const auto memory = storage.middleCols(11, 8);  // all 12 rows
  const ColMatrix<T> memory_cm = memory;
  const RealMatrix rq = ref::to_real(query), rm = ref::to_real(memory);
  const RealMatrix expected = ref::multi_head(rq, rm, rm, parameters_of(layer));
  EXPECT_TRUE(
      support::is_near(layer.forward(query, memory, memory), expected, support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(layer.forward(query, memory_cm, memory_cm), expected,
                               support::tolerance<T>()));
  const ColMatrix<T> query_cm = query;
  EXPECT_TRUE(support::is_near(layer.forward(query_cm),
                               ref::multi_head(rq, rq, rq, parameters_of(layer)),
                               support::tolerance<T>()));
}

TYPED_TEST(MultiHeadAttentionTyped, FromPytorchUsesTransposedWeights) {
  // torch.nn.MultiheadAttention computes y = x W^T + b with in_proj_weight = [W_q; W_k; W_v]
  // (3E x E, stacked by rows); the reference does exactly that, with no transposition.
  using T = TypeParam;
  const Index e = 8;
  const Matrix<T> in_w = support::random_matrix<T>(3 * e, e, 700) * T(0.35);
  const Matrix<T> in_b = support::random_matrix<T>(1, 3 * e, 701) * T(0.5);
  const Matrix<T> out_w = support::random_matrix<T>(e, e, 702) * T(0.35);
  const Matrix<T> out_b = support::random_matrix<T>(1, e, 703) * T(0.5);
  const MultiHeadAttention<T> layer =
      MultiHeadAttention<T>::from_pytorch(in_w, in_b, out_w, out_b, 2);
  EXPECT_EQ(layer.d_model(), e);
  EXPECT_EQ(layer.num_heads(), 2);
  EXPECT_TRUE(support::is_near(layer.w_q, in_w.topRows(e).transpose(), 0));
  EXPECT_TRUE(support::is_near(layer.w_k, in_w.middleRows(e, e).transpose(), 0));
  EXPECT_TRUE(support::is_near(layer.w_v, in_w.bottomRows(e).transpose(), 0));
  EXPECT_TRUE(support::is_near(layer.w_o, out_w.transpose(), 0));
  EXPECT_TRUE(support::is_near(layer.b_k, in_b.middleCols(e, e), 0));

  const Matrix<T> query = support::random_matrix<T>(5, e, 710);
  const Matrix<T> key = support::random_matrix<T>(7, e, 711);
  const Matrix<T> value = support::random_matrix<T>(7, e, 712);
  const RealMatrix expected = ref::pytorch_multi_head(
      ref::to_real(query), ref::to_real(key), ref::to_real(value), ref::to_real(in_w),
      ref::to_real(in_b), ref::to_real(out_w), ref::to_real(out_b), 2);
  EXPECT_TRUE(
      support::is_near(layer.forward(query, key, value), expected, support::tolerance<T>()));

  // Biases given as column vectors (as torch stores them: 1-D tensors) give the same layer.
  const Eigen::Matrix<T, Eigen::Dynamic, 1> in_b_col = in_b.transpose(),
                                            out_b_col = out_b.transpose();
  const MultiHeadAttention<T> from_columns =
      MultiHeadAttention<T>::from_pytorch(in_w, in_b_col, out_w, out_b_col, 2);
  EXPECT_TRUE(
      support::is_near(from_columns.forward(query, key, value), expected, support::tolerance<T>()));
}

// PyTorch 1.13, torch.nn.MultiheadAttention(4, 2, batch_first=True, dtype=torch.float64), with
//   in_proj_weight[r][c] = 0.5 sin(4r + c + 1), in_proj_bias[i] = 0.1 cos(i),
//   out_proj.weight[r][c] = 0.5 cos(4r + c + 1), out_proj.bias[i] = 0.05 (i + 1),
//   query[r][c] = sin(0.7r + 0.3c + 0.1) (3 x 4), key[r][c] = cos(0.4r - 0.9c) (2 x 4),
//   value[r][c] = 0.3r - 0.2c + 0.1 (2 x 4):
//     out, w = mha(query[None], key[None], value[None], average_attn_weights=False)
//     out2, w2 = mha(query[None], query[None], query[None], average_attn_weights=False,
//                    attn_mask=torch.triu(torch.full((3, 3), float('-inf')), diagonal=1))
//   printed with out[0].detach().tolist() (full double precision).
class MultiHeadAttentionPytorch : public ::testing::Test {
 protected:
  static Matrix<double> filled(Index rows, Index cols, double (*f)(Index, Index)) {
    Matrix<double> m(rows, cols);
    for (Index r = 0; r < rows; ++r) {
      for (Index c = 0; c < cols; ++c) m(r, c) = f(r, c);
    }
    return m;
  }
  const Matrix<double> in_w =
      filled(12, 4, [](Index r, Index c) { return 0.5 * std::sin(double(4 * r + c + 1)); });
  const Matrix<double> in_b =
      filled(12, 1, [](Index r, Index) { return 0.1 * std::cos(double(r)); });
  const Matrix<double> out_w =
      filled(4, 4, [](Index r, Index c) { return 0.5 * std::cos(double(4 * r + c + 1)); });
  const Matrix<double> out_b = filled(4, 1, [](Index r, Index) { return 0.05 * double(r + 1); });
  const Matrix<double> query = filled(
      3, 4, [](Index r, Index c) { return std::sin(0.7 * double(r) + 0.3 * double(c) + 0.1); });
  const Matrix<double> key =
      filled(2, 4, [](Index r, Index c) { return std::cos(0.4 * double(r) - 0.9 * double(c)); });
  const Matrix<double> value =
      filled(2, 4, [](Index r, Index c) { return 0.3 * double(r) - 0.2 * double(c) + 0.1; });
  const MultiHeadAttention<double> layer =
      MultiHeadAttention<double>::from_pytorch(in_w, in_b, out_w, out_b, 2);
};

TEST_F(MultiHeadAttentionPytorch, CrossAttentionMatchesTorch) {
  const Matrix<double> torch_out{
      {0.1629628410526092, -0.07133564878393073, 0.26102206665568006, 0.2261979174947708},
      {0.16046219989053262, -0.06710055193571501, 0.25798621974060504, 0.22593154458646963},
      {0.1603041550874276, -0.06580738254164134, 0.2564537206934454, 0.22664179164470688}};
  const Matrix<double> torch_head0{{0.5310585759169144, 0.46894142408308565},
                                   {0.5147968248278852, 0.4852031751721147},
                                   {0.4922687751412442, 0.5077312248587559}};
  const Matrix<double> torch_head1{{0.5427883048635602, 0.4572116951364399},
                                   {0.5646758691964907, 0.4353241308035092},
                                   {0.5565333579120564, 0.4434666420879437}};
  EXPECT_TRUE(
      support::is_near(layer.forward(query, key, value), torch_out, support::tolerance<double>()));
  const auto heads = layer.head_weights(query, key);
  ASSERT_EQ(heads.size(), 2u);
  EXPECT_TRUE(support::is_near(heads[0], torch_head0, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(heads[1], torch_head1, support::tolerance<double>()));
}

TEST_F(MultiHeadAttentionPytorch, CausalSelfAttentionMatchesTorch) {
  const Matrix<double> torch_out{
      {0.10514557803071468, 0.11362225490067632, 0.077046221934075, 0.2817492884007069},
      {0.1564263445028789, 0.07987815078096924, 0.06987869226111894, 0.32486341261657076},
      {0.19222855370273012, 0.03308947184786709, 0.09524272608778342, 0.33849401372933663}};
  const Matrix<double> torch_head0{{1.0, 0.0, 0.0},
                                   {0.5315282531962635, 0.4684717468037365, 0.0},
                                   {0.39999364804298737, 0.3240461002612351, 0.27596025169577754}};
  const Matrix<double> torch_head1{{1.0, 0.0, 0.0},
                                   {0.6080635193046284, 0.3919364806953717, 0.0},
                                   {0.4427959956050852, 0.28739841579762004, 0.26980558859729475}};
  EXPECT_TRUE(support::is_near(layer.forward(query, attention::causal), torch_out,
                               support::tolerance<double>()));
  const auto heads = layer.head_weights(query, attention::causal);
  ASSERT_EQ(heads.size(), 2u);
  EXPECT_TRUE(support::is_near(heads[0], torch_head0, support::tolerance<double>()));
  EXPECT_TRUE(support::is_near(heads[1], torch_head1, support::tolerance<double>()));
}

// --- Weights, counts, initialisation -------------------------------------------------------

TEST(MultiHeadAttention, StartsWithZeroWeightsAndGivesZeros) {
  const MultiHeadAttention<double> layer(8, 2);
  EXPECT_TRUE(layer.w_q.isZero(0) && layer.w_k.isZero(0) && layer.w_v.isZero(0) &&
              layer.w_o.isZero(0));
  EXPECT_TRUE(layer.b_q.isZero(0) && layer.b_o.isZero(0));
  EXPECT_EQ(layer.w_q.rows(), 8);
  EXPECT_EQ(layer.w_q.cols(), 8);
  EXPECT_EQ(layer.b_v.cols(), 8);
  EXPECT_TRUE(layer.forward(support::random_matrix<double>(3, 8, 1)).isZero(0));
}

TEST(MultiHeadAttention, SizesAndParameterCount) {
  const MultiHeadAttention<float> layer(12, 3);
  EXPECT_EQ(layer.d_model(), 12);
  EXPECT_EQ(layer.num_heads(), 3);
  EXPECT_EQ(layer.head_dim(), 4);
  // 4 weight matrices of 12 x 12 and 4 biases of 12: 576 + 48.
  EXPECT_EQ(layer.parameter_count(), std::int64_t{624});
  EXPECT_EQ(layer.shape().weight_count(), std::int64_t{576});
  EXPECT_EQ(layer.shape().bias_count(), std::int64_t{48});
}

TEST(MultiHeadAttention, HeadSlicesAreViewsOfTheWeights) {
  const MultiHeadAttention<double> layer = random_layer<double>(12, 3, 800);
  for (Index h = 0; h < 3; ++h) {
    SCOPED_TRACE(::testing::Message() << "head " << h);
    EXPECT_TRUE(support::is_near(layer.w_q_head(h), layer.w_q.middleCols(4 * h, 4), 0));
    EXPECT_TRUE(support::is_near(layer.w_k_head(h), layer.w_k.middleCols(4 * h, 4), 0));
    EXPECT_TRUE(support::is_near(layer.w_v_head(h), layer.w_v.middleCols(4 * h, 4), 0));
    EXPECT_TRUE(support::is_near(layer.w_o_head(h), layer.w_o.middleRows(4 * h, 4), 0));
    EXPECT_EQ(layer.w_q_head(h).data(), layer.w_q.data() + 4 * h);  // a view, not a copy
    EXPECT_EQ(layer.w_o_head(h).rows(), 4);
    EXPECT_EQ(layer.w_o_head(h).cols(), 12);
  }
}

TEST(MultiHeadAttention, ResetParametersIsDeterministicAndBounded) {
  MultiHeadAttention<double> a(16, 4), b(16, 4), c(16, 4);
  a.b_q.setOnes();  // reset_parameters zeroes the biases
  a.reset_parameters(42);
  b.reset_parameters(42);
  c.reset_parameters(43);
  EXPECT_TRUE(support::is_near(a.w_q, b.w_q, 0));
  EXPECT_TRUE(support::is_near(a.w_o, b.w_o, 0));
  EXPECT_FALSE(support::is_near(a.w_q, c.w_q, 1e-3));
  EXPECT_FALSE(support::is_near(a.w_q, a.w_k, 1e-3));  // each matrix gets its own numbers
  EXPECT_TRUE(a.b_q.isZero(0) && a.b_k.isZero(0) && a.b_v.isZero(0) && a.b_o.isZero(0));
  // Glorot uniform: U(-a, a), a = sqrt(6 / (d_model + d_model)) = sqrt(3 / 16) = 0.4330.
  const double bound = std::sqrt(3.0 / 16.0);
  for (const Matrix<double>* w : {&a.w_q, &a.w_k, &a.w_v, &a.w_o}) {
    EXPECT_LE(w->cwiseAbs().maxCoeff(), bound);
    // 256 draws: the extremes come near the bound and the mean near 0 (sd of the mean 0.016).
    EXPECT_GT(w->maxCoeff(), 0.9 * bound);
    EXPECT_LT(w->minCoeff(), -0.9 * bound);
    EXPECT_LT(std::abs(w->mean()), 0.1 * bound);
  }
}

TEST(MultiHeadAttention, ResetParametersRestoresResizedWeights) {
  MultiHeadAttention<float> layer(8, 2);
  layer.w_k.resize(3, 3);
  layer.reset_parameters(1);
  EXPECT_EQ(layer.w_k.rows(), 8);
  EXPECT_EQ(layer.w_k.cols(), 8);
  EXPECT_NO_THROW((void)layer.forward(support::random_matrix<float>(4, 8, 2)));
}

// --- Shape checks: one test per check ------------------------------------------------------

/// The message of the ShapeError `f` throws ("" if none).
template <typename F>
std::string shape_error_message(F&& f) {
  try {
    f();
  } catch (const attention::ShapeError& e) {
    return e.what();
  }
  return "";
}

TEST(MultiHeadAttentionShapes, ThrowsWhenHeadsDoNotDivideModelWidth) {
  EXPECT_THROW(MultiHeadAttention<double>(8, 3), attention::ShapeError);
  EXPECT_EQ(shape_error_message([] { MultiHeadAttention<double>(8, 3); }),
            "attention::MultiHeadAttention: num_heads (= 3) must divide d_model (= 8)");
}

TEST(MultiHeadAttentionShapes, ThrowsOnZeroHeads) {
  EXPECT_THROW(MultiHeadAttention<double>(8, 0), attention::ShapeError);
  EXPECT_EQ(shape_error_message([] { MultiHeadAttention<double>(8, 0); }),
            "attention::MultiHeadAttention: num_heads (= 0) must be at least 1");
}

TEST(MultiHeadAttentionShapes, ThrowsOnNegativeHeads) {
  EXPECT_THROW(MultiHeadAttention<double>(8, -2), attention::ShapeError);
}

TEST(MultiHeadAttentionShapes, ThrowsOnZeroModelWidth) {
  EXPECT_THROW(MultiHeadAttention<double>(0, 1), attention::ShapeError);
  EXPECT_EQ(shape_error_message([] { MultiHeadAttention<double>(0, 1); }),
            "attention::MultiHeadAttention: d_model (= 0) must be at least 1");
}

class MultiHeadAttentionForwardShapes : public ::testing::Test {
 protected:
  MultiHeadAttention<double> layer = random_layer<double>(8, 2, 900);
  const Matrix<double> x = support::random_matrix<double>(5, 8, 901);
  const Matrix<double> memory = support::random_matrix<double>(3, 8, 902);
  static Matrix<double> zeros(Index rows, Index cols) { return Matrix<double>::Zero(rows, cols); }
};

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnQueryWidth) {
  EXPECT_THROW((void)layer.forward(zeros(5, 7)), attention::ShapeError);
  EXPECT_THROW((void)layer.forward(zeros(5, 7), memory, memory), attention::ShapeError);
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(zeros(5, 7), memory, memory); }),
            "attention::MultiHeadAttention::forward: query.cols() (= 7) must equal d_model (= 8)");
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnKeyWidth) {
  EXPECT_THROW((void)layer.forward(x, zeros(3, 9), memory), attention::ShapeError);
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnValueWidth) {
  EXPECT_THROW((void)layer.forward(x, memory, zeros(3, 6)), attention::ShapeError);
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsWhenValueRowsDifferFromKeyRows) {
  EXPECT_THROW((void)layer.forward(x, memory, zeros(4, 8)), attention::ShapeError);
  EXPECT_EQ(shape_error_message([&] { (void)layer.forward(x, memory, zeros(4, 8)); }),
            "attention::MultiHeadAttention::forward: value.rows() (= 4) must equal key.rows() "
            "(= 3)");
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnZeroQueries) {
  EXPECT_THROW((void)layer.forward(zeros(0, 8)), attention::ShapeError);
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnZeroKeys) {
  EXPECT_THROW((void)layer.forward(x, zeros(0, 8), zeros(0, 8)), attention::ShapeError);
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnMaskShape) {
  const support::BoolMatrix wrong = support::BoolMatrix::Constant(5, 5, true);
  EXPECT_THROW((void)layer.forward(x, memory, memory, attention::keep(wrong)),
               attention::ShapeError);
  EXPECT_THROW((void)layer.forward(x, attention::bias(zeros(5, 4))), attention::ShapeError);
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsWhenAWeightLostItsShape) {
  // The weights are public members: a caller may resize one. Each of the eight checks.
  for (Matrix<double> MultiHeadAttention<double>::*w :
       {&MultiHeadAttention<double>::w_q, &MultiHeadAttention<double>::w_k,
        &MultiHeadAttention<double>::w_v, &MultiHeadAttention<double>::w_o}) {
    for (const auto& [rows, cols] : {std::pair<Index, Index>{7, 8}, {8, 9}}) {
      SCOPED_TRACE(::testing::Message() << rows << " x " << cols);
      MultiHeadAttention<double> broken = layer;
      (broken.*w) = zeros(rows, cols);
      EXPECT_THROW((void)broken.forward(x), attention::ShapeError);
      EXPECT_THROW((void)broken.head_weights(x), attention::ShapeError);
    }
  }
  MultiHeadAttention<double> broken = layer;
  broken.w_v = zeros(8, 6);
  EXPECT_EQ(shape_error_message([&] { (void)broken.forward(x); }),
            "attention::MultiHeadAttention::forward: w_v.cols() (= 6) must equal kv_dim (= 8)");
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsWhenABiasLostItsShape) {
  for (RowVector<double> MultiHeadAttention<double>::*b :
       {&MultiHeadAttention<double>::b_q, &MultiHeadAttention<double>::b_k,
        &MultiHeadAttention<double>::b_v, &MultiHeadAttention<double>::b_o}) {
    MultiHeadAttention<double> broken = layer;
    (broken.*b) = RowVector<double>::Zero(5);
    EXPECT_THROW((void)broken.forward(x), attention::ShapeError);
  }
}

TEST_F(MultiHeadAttentionForwardShapes, HeadWeightsChecksShapes) {
  EXPECT_THROW((void)layer.head_weights(zeros(5, 7)), attention::ShapeError);
  EXPECT_THROW((void)layer.head_weights(x, zeros(3, 9)), attention::ShapeError);
  EXPECT_THROW((void)layer.head_weights(x, attention::bias(zeros(5, 4))), attention::ShapeError);
  EXPECT_EQ(shape_error_message([&] { (void)layer.head_weights(x, zeros(3, 9)); }),
            "attention::MultiHeadAttention::head_weights: key.cols() (= 9) must equal d_model (= "
            "8)");
}

TEST_F(MultiHeadAttentionForwardShapes, ThrowsOnHeadIndexOutOfRange) {
  EXPECT_THROW((void)layer.w_q_head(2), attention::ShapeError);
  EXPECT_THROW((void)layer.w_k_head(5), attention::ShapeError);
  EXPECT_THROW((void)layer.w_v_head(-1), attention::ShapeError);
  EXPECT_THROW((void)layer.w_o_head(2), attention::ShapeError);
  EXPECT_NO_THROW((void)layer.w_o_head(1));
  EXPECT_EQ(shape_error_message([&] { (void)layer.w_q_head(2); }),
            "attention::MultiHeadAttention::head: head index (= 2) must be at least 0 and less "
            "than num_heads() (= 2)");
}

class FromPytorchShapes : public ::testing::Test {
 protected:
  static Matrix<double> zeros(Index rows, Index cols) { return Matrix<double>::Zero(rows, cols); }
  static auto build(const Matrix<double>& in_w, const Matrix<double>& in_b,
                    const Matrix<double>& out_w, const Matrix<double>& out_b, Index heads = 2) {
    return MultiHeadAttention<double>::from_pytorch(in_w, in_b, out_w, out_b, heads);
  }
};

TEST_F(FromPytorchShapes, AcceptsPytorchSizes) {
  EXPECT_NO_THROW((void)build(zeros(12, 4), zeros(12, 1), zeros(4, 4), zeros(4, 1)));
  EXPECT_NO_THROW((void)build(zeros(12, 4), zeros(1, 12), zeros(4, 4), zeros(1, 4)));
}

TEST_F(FromPytorchShapes, ThrowsOnZeroEmbedDim) {
  EXPECT_THROW((void)build(zeros(0, 0), zeros(0, 1), zeros(0, 0), zeros(0, 1)),
               attention::ShapeError);
}

TEST_F(FromPytorchShapes, ThrowsWhenInProjWeightIsNotThreeEByE) {
  EXPECT_THROW((void)build(zeros(8, 4), zeros(12, 1), zeros(4, 4), zeros(4, 1)),
               attention::ShapeError);
  EXPECT_EQ(
      shape_error_message([] { (void)build(zeros(8, 4), zeros(12, 1), zeros(4, 4), zeros(4, 1)); }),
      "attention::MultiHeadAttention::from_pytorch: in_proj_weight.rows() (= 8) must equal "
      "3 * in_proj_weight.cols() (= 12)");
}

TEST_F(FromPytorchShapes, ThrowsWhenInProjBiasHasOtherLength) {
  EXPECT_THROW((void)build(zeros(12, 4), zeros(8, 1), zeros(4, 4), zeros(4, 1)),
               attention::ShapeError);
}

TEST_F(FromPytorchShapes, ThrowsWhenInProjBiasIsNotAVector) {
  EXPECT_THROW((void)build(zeros(12, 4), zeros(2, 6), zeros(4, 4), zeros(4, 1)),
               attention::ShapeError);
  // Both dimensions of the matrix given, and the length expected.
  EXPECT_EQ(
      shape_error_message([] { (void)build(zeros(24, 8), zeros(3, 8), zeros(8, 8), zeros(8, 1)); }),
      "attention::MultiHeadAttention::from_pytorch: in_proj_bias (3 x 8) must be a vector of 3 * "
      "embed_dim (= 24) entries");
}

TEST_F(FromPytorchShapes, ThrowsWhenOutProjWeightIsNotEByE) {
  EXPECT_THROW((void)build(zeros(12, 4), zeros(12, 1), zeros(3, 4), zeros(4, 1)),
               attention::ShapeError);
  EXPECT_THROW((void)build(zeros(12, 4), zeros(12, 1), zeros(4, 5), zeros(4, 1)),
               attention::ShapeError);
}

TEST_F(FromPytorchShapes, ThrowsWhenOutProjBiasHasOtherLength) {
  EXPECT_THROW((void)build(zeros(12, 4), zeros(12, 1), zeros(4, 4), zeros(5, 1)),
               attention::ShapeError);
  EXPECT_THROW((void)build(zeros(12, 4), zeros(12, 1), zeros(4, 4), zeros(2, 2)),
               attention::ShapeError);
}

TEST_F(FromPytorchShapes, ThrowsWhenHeadsDoNotDivideEmbedDim) {
  EXPECT_THROW((void)build(zeros(12, 4), zeros(12, 1), zeros(4, 4), zeros(4, 1), 3),
               attention::ShapeError);
  // Named after the call the user made, not the constructor it uses.
  EXPECT_EQ(shape_error_message(
                [] { (void)build(zeros(12, 4), zeros(12, 1), zeros(4, 4), zeros(4, 1), 3); }),
            "attention::MultiHeadAttention::from_pytorch: num_heads (= 3) must divide embed_dim "
            "(= 4)");
  EXPECT_EQ(shape_error_message(
                [] { (void)build(zeros(12, 4), zeros(12, 1), zeros(4, 4), zeros(4, 1), 0); }),
            "attention::MultiHeadAttention::from_pytorch: num_heads (= 0) must be at least 1");
}

}  // namespace
