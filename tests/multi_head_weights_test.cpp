// SPDX-License-Identifier: MIT
// Tests for attention/multi_head_weights.hpp: MultiHeadWeights, its shape check and messages, its
// projections against the long-double reference (support/reference.hpp), from_pytorch against
// PyTorch's layout written out by hand (and back), reset_parameters, and a layer made from weights.

#include <gtest/gtest.h>

#include <attention/multi_head.hpp>
#include <attention/multi_head_weights.hpp>
#include <string>
#include <tuple>
#include <utility>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::MultiHeadShape;
using attention::MultiHeadWeights;
using attention::RowVector;
using support::message_of;

/// Random weights for d_model 8, 4 query heads and 2 K/V heads (kv_dim 4).
template <typename T>
MultiHeadWeights<T> random_weights(unsigned seed) {
  return support::random_layer<T>(8, 4, 2, seed).weights();
}

template <typename T>
class MultiHeadWeightsTyped : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(MultiHeadWeightsTyped, Scalars, support::ScalarNames);

TEST(MultiHeadWeights, StartAtZeroWithTheShapesOfTheShape) {
  const MultiHeadWeights<float> w(MultiHeadShape(12, 4, 2));
  EXPECT_EQ(w.d_model(), 12);
  EXPECT_EQ(w.num_heads(), 4);
  EXPECT_EQ(w.num_kv_heads(), 2);
  EXPECT_EQ(w.kv_dim(), 6);
  // w_q, w_o: 12 x 12; w_k, w_v: 12 x 6; b_q, b_o: 1 x 12; b_k, b_v: 1 x 6; all zero.
  const std::tuple<const char*, Index, Index, bool, Index, Index> sizes[] = {
      {"w_q", w.w_q.rows(), w.w_q.cols(), w.w_q.isZero(0), 12, 12},
      {"w_k", w.w_k.rows(), w.w_k.cols(), w.w_k.isZero(0), 12, 6},
      {"w_v", w.w_v.rows(), w.w_v.cols(), w.w_v.isZero(0), 12, 6},
      {"w_o", w.w_o.rows(), w.w_o.cols(), w.w_o.isZero(0), 12, 12},
      {"b_q", w.b_q.rows(), w.b_q.cols(), w.b_q.isZero(0), 1, 12},
      {"b_k", w.b_k.rows(), w.b_k.cols(), w.b_k.isZero(0), 1, 6},
      {"b_v", w.b_v.rows(), w.b_v.cols(), w.b_v.isZero(0), 1, 6},
      {"b_o", w.b_o.rows(), w.b_o.cols(), w.b_o.isZero(0), 1, 12}};
  for (const auto& [name, rows, cols, zero, expected_rows, expected_cols] : sizes) {
    EXPECT_EQ(rows, expected_rows) << name;
    EXPECT_EQ(cols, expected_cols) << name;
    EXPECT_TRUE(zero) << name;
  }
  EXPECT_EQ(w.parameter_count(), 2 * 144 + 2 * 72 + 2 * 12 + 2 * 6);
  EXPECT_NO_THROW(w.check("test"));
}

// --- The shape check
// ------------------------------------------------------------------------------

TEST(MultiHeadWeightsCheck, NamesTheParameterAndBothSizes) {
  const MultiHeadWeights<double> good = random_weights<double>(10);
  const auto broken = [&](auto change) {
    MultiHeadWeights<double> w = good;
    change(w);
    return message_of<attention::ShapeError>([&] { w.check("caller"); });
  };
  EXPECT_EQ(broken([](auto& w) { w.w_q.resize(7, 8); }),
            "attention::caller: w_q.rows() (= 7) must equal d_model (= 8)");
  EXPECT_EQ(broken([](auto& w) { w.w_k.resize(8, 8); }),
            "attention::caller: w_k.cols() (= 8) must equal kv_dim (= 4)");
  EXPECT_EQ(broken([](auto& w) { w.w_v.resize(9, 4); }),
            "attention::caller: w_v.rows() (= 9) must equal d_model (= 8)");
  EXPECT_EQ(broken([](auto& w) { w.w_o.resize(8, 4); }),
            "attention::caller: w_o.cols() (= 4) must equal d_model (= 8)");
  EXPECT_EQ(broken([](auto& w) { w.b_q.resize(4); }),
            "attention::caller: b_q.cols() (= 4) must equal d_model (= 8)");
  EXPECT_EQ(broken([](auto& w) { w.b_k.resize(8); }),
            "attention::caller: b_k.cols() (= 8) must equal kv_dim (= 4)");
  EXPECT_EQ(broken([](auto& w) { w.b_v.resize(0); }),
            "attention::caller: b_v.cols() (= 0) must equal kv_dim (= 4)");
  EXPECT_EQ(broken([](auto& w) { w.b_o.resize(9); }),
            "attention::caller: b_o.cols() (= 9) must equal d_model (= 8)");
}

TEST(MultiHeadWeightsCheck, WeightsAreCheckedBeforeBiases) {
  MultiHeadWeights<double> w = random_weights<double>(20);
  w.b_q.resize(3);
  w.w_o.resize(8, 5);
  EXPECT_EQ(message_of<attention::ShapeError>([&] { w.check("f"); }),
            "attention::f: w_o.cols() (= 5) must equal d_model (= 8)");
}

// --- Projections
// ----------------------------------------------------------------------------------

TYPED_TEST(MultiHeadWeightsTyped, ProjectionsMatchTheWrittenOutFormula) {
  // y = x w + b, one sum per entry in long double (reference::project); 70 rows take the
  // projection kernel's packed path, 5 its direct path.
  using T = TypeParam;
  using attention::MultiHeadProjection;
  const MultiHeadWeights<T> w = random_weights<T>(30);
  const std::tuple<MultiHeadProjection, const Matrix<T>*, const RowVector<T>*> parts[] = {
      {MultiHeadProjection::query, &w.w_q, &w.b_q},
      {MultiHeadProjection::key, &w.w_k, &w.b_k},
      {MultiHeadProjection::value, &w.w_v, &w.b_v},
      {MultiHeadProjection::output, &w.w_o, &w.b_o}};
  for (const Index rows : {Index(5), Index(70)}) {
    const Matrix<T> x = support::random_matrix<T>(rows, 8, 31);
    for (const auto& [which, weight, bias] : parts) {
      SCOPED_TRACE(::testing::Message() << rows << " rows, projection " << static_cast<int>(which));
      const Matrix<T> y = w.project(which, x);
      EXPECT_TRUE(support::is_near(
          y, ref::project(ref::to_real(x), ref::to_real(*weight), ref::to_real(*bias)),
          support::tolerance<T>()));
      // Written into a block of a wider matrix: the same bits, and nothing else touched.
      Matrix<T> wide = Matrix<T>::Zero(rows, weight->cols() + 5);
      w.project(which, x, wide.middleCols(3, weight->cols()));
      EXPECT_TRUE(support::is_near(wide.middleCols(3, weight->cols()), y, 0));
      EXPECT_TRUE(wide.leftCols(3).isZero(0) && wide.rightCols(2).isZero(0));
    }
  }
}

// The documented property of the layer's projections for float and double: a row's result does not
// depend on the other rows of the call (kernels/projection.hpp).
template <typename T>
void expect_rows_independent_of_the_others() {
  constexpr auto query = attention::MultiHeadProjection::query;
  const MultiHeadWeights<T> w = random_weights<T>(40);
  const Matrix<T> x = support::random_matrix<T>(70, 8, 41);
  const Matrix<T> all = w.project(query, x);
  for (const Index split : {Index(1), Index(9), Index(64)}) {
    EXPECT_TRUE(support::is_near(w.project(query, x.topRows(split)), all.topRows(split), 0));
    EXPECT_TRUE(support::is_near(w.project(query, x.bottomRows(70 - split)),
                                 all.bottomRows(70 - split), 0));
  }
}

TEST(MultiHeadWeightsProjections, RowsDoNotDependOnTheOtherRows) {
  expect_rows_independent_of_the_others<float>();
  expect_rows_independent_of_the_others<double>();
}

// In place: `out` is x itself (query and output projections are square), or a block of w_q.
TEST(MultiHeadWeightsProjections, OutputMayShareMemoryWithTheInputs) {
  using attention::MultiHeadProjection;
  const MultiHeadWeights<double> w = random_weights<double>(45);
  const Matrix<double> x0 = support::random_matrix<double>(70, 8, 46);
  for (const auto which : {MultiHeadProjection::query, MultiHeadProjection::output}) {
    const Matrix<double> expected = w.project(which, x0);
    Matrix<double> x = x0;
    w.project(which, x, x);
    EXPECT_TRUE(support::is_near(x, expected, 0));
  }
  MultiHeadWeights<double> v = w;
  const Matrix<double> x = v.w_q.topRows(3);
  const Matrix<double> expected = v.project(MultiHeadProjection::key, x);
  v.project(MultiHeadProjection::key, v.w_q.topRows(3), v.w_q.block(0, 0, 3, 4));
  EXPECT_TRUE(support::is_near(v.w_q.block(0, 0, 3, 4), expected, 0));
}

TEST(MultiHeadWeightsProjections, CheckShapes) {
  using attention::MultiHeadProjection;
  MultiHeadWeights<float> w = random_weights<float>(50);
  const Matrix<float> x = Matrix<float>::Ones(3, 8);
  Matrix<float> out(3, 4);
  EXPECT_NO_THROW(w.project(MultiHeadProjection::key, x, out));
  EXPECT_EQ(message_of<attention::ShapeError>(
                [&] { (void)w.project(MultiHeadProjection::query, Matrix<float>::Ones(3, 7)); }),
            "attention::MultiHeadWeights::project: x.cols() (= 7) must equal d_model (= 8)");
  EXPECT_EQ(message_of<attention::ShapeError>(
                [&] { w.project(MultiHeadProjection::value, x, out.topRows(2)); }),
            "attention::MultiHeadWeights::project: out.rows() (= 2) must equal x.rows() (= 3)");
  EXPECT_EQ(
      message_of<attention::ShapeError>([&] { w.project(MultiHeadProjection::query, x, out); }),
      "attention::MultiHeadWeights::project: out.cols() (= 4) must equal d_model (= 8)");
  w.b_o.resize(5);
  EXPECT_EQ(
      message_of<attention::ShapeError>([&] { (void)w.project(MultiHeadProjection::output, x); }),
      "attention::MultiHeadWeights::project: b_o.cols() (= 5) must equal d_model (= 8)");
  EXPECT_NO_THROW((void)w.project(MultiHeadProjection::key, x));  // only the part used is checked
}

// --- reset_parameters, from_pytorch ------------------------------------------------------------

TEST(MultiHeadWeights, ResetParametersIsTheLayers) {
  MultiHeadWeights<double> w(MultiHeadShape(16, 4, 2));
  attention::MultiHeadAttention<double> layer(16, 4, 2);
  w.b_k.setOnes();
  w.w_v.resize(2, 2);
  w.reset_parameters(9);
  layer.reset_parameters(9);
  EXPECT_TRUE(support::is_near(w.w_q, layer.w_q, 0));
  EXPECT_TRUE(support::is_near(w.w_k, layer.w_k, 0));
  EXPECT_TRUE(support::is_near(w.w_v, layer.w_v, 0));
  EXPECT_TRUE(support::is_near(w.w_o, layer.w_o, 0));
  EXPECT_TRUE(w.b_k.isZero(0));
  EXPECT_NO_THROW(w.check("test"));
}

/// PyTorch's nn.MultiheadAttention parameters of `w`, written out: in_proj_weight = [W_q^T; W_k^T;
/// W_v^T] (3E x E), in_proj_bias = [b_q b_k b_v] (3E), out_proj.weight = W_o^T, out_proj.bias.
struct PytorchParameters {
  Matrix<double> in_w, in_b, out_w, out_b;
};
PytorchParameters to_pytorch(const MultiHeadWeights<double>& w) {
  const Index e = w.d_model();
  PytorchParameters p{Matrix<double>(3 * e, e), Matrix<double>(3 * e, 1), Matrix<double>(e, e),
                      Matrix<double>(e, 1)};
  for (Index r = 0; r < e; ++r) {
    for (Index c = 0; c < e; ++c) {
      p.in_w(r, c) = w.w_q(c, r);
      p.in_w(e + r, c) = w.w_k(c, r);
      p.in_w(2 * e + r, c) = w.w_v(c, r);
      p.out_w(r, c) = w.w_o(c, r);
    }
    p.in_b(r, 0) = w.b_q(r);
    p.in_b(e + r, 0) = w.b_k(r);
    p.in_b(2 * e + r, 0) = w.b_v(r);
    p.out_b(r, 0) = w.b_o(r);
  }
  return p;
}

TEST(MultiHeadWeightsFromPytorch, RoundTripIsExact) {
  const MultiHeadWeights<double> w = support::random_layer<double>(8, 2, 2, 60).weights();
  const PytorchParameters p = to_pytorch(w);
  const auto back = MultiHeadWeights<double>::from_pytorch(p.in_w, p.in_b, p.out_w, p.out_b, 2);
  EXPECT_EQ(back.num_heads(), 2);
  EXPECT_EQ(back.num_kv_heads(), 2);
  EXPECT_TRUE(support::is_near(back.w_q, w.w_q, 0));
  EXPECT_TRUE(support::is_near(back.w_k, w.w_k, 0));
  EXPECT_TRUE(support::is_near(back.w_v, w.w_v, 0));
  EXPECT_TRUE(support::is_near(back.w_o, w.w_o, 0));
  EXPECT_TRUE(support::is_near(back.b_q, w.b_q, 0));
  EXPECT_TRUE(support::is_near(back.b_k, w.b_k, 0));
  EXPECT_TRUE(support::is_near(back.b_v, w.b_v, 0));
  EXPECT_TRUE(support::is_near(back.b_o, w.b_o, 0));
  // And the other way: PyTorch's tensors through the weights and back, biases as rows.
  const PytorchParameters again = to_pytorch(MultiHeadWeights<double>::from_pytorch(
      p.in_w, Matrix<double>(p.in_b.transpose()), p.out_w, Matrix<double>(p.out_b.transpose()), 4));
  EXPECT_TRUE(support::is_near(again.in_w, p.in_w, 0));
  EXPECT_TRUE(support::is_near(again.in_b, p.in_b, 0));
  EXPECT_TRUE(support::is_near(again.out_w, p.out_w, 0));
  EXPECT_TRUE(support::is_near(again.out_b, p.out_b, 0));
}

TEST(MultiHeadWeightsFromPytorch, MessagesNameTheCaller) {
  const Matrix<double> in_w = Matrix<double>::Zero(12, 4), in_b = Matrix<double>::Zero(12, 1),
                       out_w = Matrix<double>::Zero(4, 4), out_b = Matrix<double>::Zero(4, 1);
  EXPECT_EQ(message_of<attention::ShapeError>(
                [&] { (void)MultiHeadWeights<double>::from_pytorch(in_w, in_b, out_w, out_b, 3); }),
            "attention::MultiHeadWeights::from_pytorch: num_heads (= 3) must divide embed_dim "
            "(= 4)");
  EXPECT_EQ(message_of<attention::ShapeError>([&] {
              (void)attention::MultiHeadAttention<double>::from_pytorch(in_w, in_b, out_w, out_b,
                                                                        3);
            }),
            "attention::MultiHeadAttention::from_pytorch: num_heads (= 3) must divide embed_dim "
            "(= 4)");
  EXPECT_EQ(message_of<attention::ShapeError>([&] {
              (void)MultiHeadWeights<double>::from_pytorch(in_w, Matrix<double>::Zero(2, 6), out_w,
                                                           out_b, 2);
            }),
            "attention::MultiHeadWeights::from_pytorch: in_proj_bias (2 x 6) must be a vector of 3 "
            "* embed_dim (= 12) entries");
}

// --- A layer made from weights ------------------------------------------------------------------

TEST(MultiHeadWeights, LayerFromWeightsIsThoseWeights) {
  MultiHeadWeights<double> w = random_weights<double>(70);
  const MultiHeadWeights<double> copy = w;
  attention::PositionFeatures features;
  features.softcap = 2.0;
  const attention::MultiHeadAttention<double> layer(std::move(w), features);
  EXPECT_EQ(layer.num_kv_heads(), 2);
  EXPECT_TRUE(support::is_near(layer.weights().w_k, copy.w_k, 0));
  EXPECT_EQ(layer.softcap, 2.0);
  const Matrix<double> x = support::random_matrix<double>(6, 8, 71);
  const ref::Matrix rx = ref::to_real(x);
  support::PositionFeatures f;
  f.softcap = 2.0;
  EXPECT_TRUE(
      support::is_near(layer.forward(x, attention::causal),
                       ref::multi_head(rx, rx, rx, support::parameters_of(layer),
                                       ref::Mask::causal(), support::reference_positions(f, 0, 0)),
                       support::tolerance<double>()));
}

}  // namespace
