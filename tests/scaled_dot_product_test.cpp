// SPDX-License-Identifier: MIT
// Tests for attention/scaled_dot_product.hpp: scaled_dot_product_attention and attention_weights,
// against the long-double reference (support/reference.hpp) on random inputs, for every mask, and
// their shape checks and non-finite-input policy.

#include <gtest/gtest.h>

#include <attention/scaled_dot_product.hpp>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/scalars.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using RealMatrix = ref::Matrix;

template <typename T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <typename T>
struct Inputs {
  Matrix<T> q, k, v;
  RealMatrix rq, rk, rv;  // the same numbers in long double, for the reference
};

/// q: L x d_k, k: S x d_k, v: S x d_v, entries roughly N(0, 1).
template <typename T>
Inputs<T> inputs(Index l, Index s, Index d_k, Index d_v, unsigned seed) {
  Inputs<T> in;
  in.q = support::random_matrix<T>(l, d_k, seed);
  in.k = support::random_matrix<T>(s, d_k, seed + 1);
  in.v = support::random_matrix<T>(s, d_v, seed + 2);
  in.rq = ref::to_real(in.q);
  in.rk = ref::to_real(in.k);
  in.rv = ref::to_real(in.v);
  return in;
}

/// A bias mask: N(0, 1) entries, -inf at about a quarter of them, and row `hidden_row` all -inf.
template <typename T>
Matrix<T> random_bias(Index l, Index s, unsigned seed, Index hidden_row) {
  Matrix<T> b = support::random_matrix<T>(l, s, seed);
  const support::BoolMatrix hide = support::random_keep(l, s, seed + 1, 0.25);
  for (Index i = 0; i < l; ++i) {
    for (Index j = 0; j < s; ++j) {
      if (hide(i, j) || i == hidden_row) b(i, j) = -std::numeric_limits<T>::infinity();
    }
  }
  return b;
}

template <typename T>
class ScaledDotProductAttention : public ::testing::Test {};
TYPED_TEST_SUITE(ScaledDotProductAttention, support::AllScalars, support::ScalarNames);

// (L, S, d_k, d_v): single tokens, sizes below and across the tiled kernel's tiles (48 or 64
// queries x 24 to 96 keys, kernels/micro_kernels.inc), L != S both ways, d_v != d_k, and d_k = 64.
const std::tuple<Index, Index, Index, Index> shapes[] = {
    {1, 1, 1, 1},    {1, 6, 4, 3},    {6, 1, 4, 3},     {5, 7, 3, 4},   {16, 16, 8, 8},
    {33, 17, 64, 5}, {3, 40, 16, 16}, {70, 45, 12, 20}, {37, 41, 7, 9}, {50, 100, 7, 9}};

TYPED_TEST(ScaledDotProductAttention, MatchesReferenceUnmasked) {
  using T = TypeParam;
  unsigned seed = 100;
  for (const auto& [l, s, d_k, d_v] : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "L " << l << " S " << s << " d_k " << d_k << " d_v " << d_v);
    const Inputs<T> in = inputs<T>(l, s, d_k, d_v, seed += 3);
    EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(in.q, in.k, in.v),
                                 ref::attention(in.rq, in.rk, in.rv), support::tolerance<T>()));
  }
}

TYPED_TEST(ScaledDotProductAttention, CausalMatchesReference) {
  using T = TypeParam;
  unsigned seed = 200;
  for (const auto& [l, s, d_k, d_v] : shapes) {
    SCOPED_TRACE(::testing::Message()
                 << "L " << l << " S " << s << " d_k " << d_k << " d_v " << d_v);
    const Inputs<T> in = inputs<T>(l, s, d_k, d_v, seed += 3);
    EXPECT_TRUE(support::is_near(
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal),
        ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal()), support::tolerance<T>()));
  }
}

TYPED_TEST(ScaledDotProductAttention, CausalWithFewerQueriesThanKeysIsTopLeftAligned) {
  // L = 3 < S = 7: query i sees keys 0..i; keys 3..6 are seen by nobody.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(3, 7, 5, 4, 300);
  const Matrix<T> w = attention::attention_weights(in.q, in.k, attention::causal);
  for (Index i = 0; i < 3; ++i) {
    for (Index j = 0; j < 7; ++j) {
      if (j <= i) {
        EXPECT_GT(w(i, j), T(0)) << i << ", " << j;
      } else {
        EXPECT_EQ(w(i, j), T(0)) << i << ", " << j;
      }
    }
  }
  EXPECT_EQ(w(0, 0), T(1));
  EXPECT_TRUE(support::is_near(w, ref::weights(in.rq, in.rk, ref::Mask::causal()),
                               support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal),
      ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal()), support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, CausalWithMoreQueriesThanKeysIsTopLeftAligned) {
  // L = 9 > S = 4: queries 3..8 see every key, so their rows are the unmasked ones.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(9, 4, 5, 6, 310);
  const Matrix<T> w = attention::attention_weights(in.q, in.k, attention::causal);
  const Matrix<T> unmasked = attention::attention_weights(in.q, in.k);
  for (Index i = 0; i < 9; ++i) {
    for (Index j = 0; j < 4; ++j) {
      if (j <= i) {
        EXPECT_GT(w(i, j), T(0)) << i << ", " << j;
      } else {
        EXPECT_EQ(w(i, j), T(0)) << i << ", " << j;
      }
    }
  }
  EXPECT_TRUE(support::is_near(w.bottomRows(6), unmasked.bottomRows(6), support::tolerance<T>()));
  const Matrix<T> out =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  EXPECT_TRUE(support::is_near(out, ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal()),
                               support::tolerance<T>()));
  // Query 0 sees only key 0: its output is v's row 0.
  EXPECT_TRUE(support::is_near(out.row(0), in.v.row(0), support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, CausalMaskedWeightsAreExactlyZero) {
  // Not denormals: a vectorised exp(-inf) need not return 0. With v = I the output is the weight
  // matrix itself, so the attention kernel's masked entries are checked too.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(37, 41, 8, 1, 320);
  const Matrix<T> w = attention::attention_weights(in.q, in.k, attention::causal);
  const Matrix<T> out = attention::scaled_dot_product_attention(
      in.q, in.k, Matrix<T>::Identity(41, 41), attention::causal);
  for (Index i = 0; i < 37; ++i) {
    for (Index j = i + 1; j < 41; ++j) {
      EXPECT_EQ(w(i, j), T(0)) << i << ", " << j;
      EXPECT_EQ(out(i, j), T(0)) << i << ", " << j;
    }
  }
  EXPECT_TRUE(support::is_near(out, w, support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, KeepMaskWithFullyMaskedRow) {
  using T = TypeParam;
  for (const auto& [l, s, d_k, d_v] :
       {std::tuple<Index, Index, Index, Index>{13, 21, 6, 5}, {40, 35, 16, 16}}) {
    SCOPED_TRACE(::testing::Message() << "L " << l << " S " << s);
    const Inputs<T> in = inputs<T>(l, s, d_k, d_v, 330);
    support::BoolMatrix visible = support::random_keep(l, s, 331, 0.6);
    visible.row(4).setConstant(false);  // query 4 sees no key
    const auto mask = ref::Mask::keep(visible);
    const Matrix<T> w = attention::attention_weights(in.q, in.k, attention::keep(visible));
    const Matrix<T> out =
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(visible));
    EXPECT_TRUE(support::is_near(w, ref::weights(in.rq, in.rk, mask), support::tolerance<T>()));
    EXPECT_TRUE(
        support::is_near(out, ref::attention(in.rq, in.rk, in.rv, mask), support::tolerance<T>()));
    for (Index j = 0; j < s; ++j) EXPECT_EQ(w(4, j), T(0)) << j;
    for (Index c = 0; c < d_v; ++c) EXPECT_EQ(out(4, c), T(0)) << c;
    for (Index i = 0; i < l; ++i) {
      for (Index j = 0; j < s; ++j) {
        if (!visible(i, j)) {
          EXPECT_EQ(w(i, j), T(0)) << i << ", " << j;
        }
      }
    }
  }
}

TYPED_TEST(ScaledDotProductAttention, BiasMaskWithFullyMaskedRow) {
  // Finite biases shift scores, -inf hides keys; row 2 is all -inf.
  using T = TypeParam;
  for (const auto& [l, s, d_k, d_v] :
       {std::tuple<Index, Index, Index, Index>{9, 14, 5, 7}, {40, 35, 16, 16}}) {
    SCOPED_TRACE(::testing::Message() << "L " << l << " S " << s);
    const Inputs<T> in = inputs<T>(l, s, d_k, d_v, 340);
    const Matrix<T> b = random_bias<T>(l, s, 341, 2);
    const auto mask = ref::Mask::bias(b);
    const Matrix<T> w = attention::attention_weights(in.q, in.k, attention::bias(b));
    const Matrix<T> out =
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(b));
    EXPECT_TRUE(support::is_near(w, ref::weights(in.rq, in.rk, mask), support::tolerance<T>()));
    EXPECT_TRUE(
        support::is_near(out, ref::attention(in.rq, in.rk, in.rv, mask), support::tolerance<T>()));
    for (Index j = 0; j < s; ++j) EXPECT_EQ(w(2, j), T(0)) << j;
    for (Index c = 0; c < d_v; ++c) EXPECT_EQ(out(2, c), T(0)) << c;
    for (Index i = 0; i < l; ++i) {
      for (Index j = 0; j < s; ++j) {
        if (std::isinf(b(i, j))) {
          EXPECT_EQ(w(i, j), T(0)) << i << ", " << j;
        }
      }
    }
  }
}

TYPED_TEST(ScaledDotProductAttention, ZeroBiasEqualsNoMask) {
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(11, 13, 6, 4, 345);
  const Matrix<T> zero = Matrix<T>::Zero(11, 13);
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(zero)),
      attention::scaled_dot_product_attention(in.q, in.k, in.v), support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, ScaleOverride) {
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(12, 15, 6, 5, 350);
  const attention::Options options{0.3};
  const ref::Real scale = static_cast<T>(0.3);  // the scale the library can represent in T
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::NoMask{}, options),
      ref::attention(in.rq, in.rk, in.rv, ref::Mask::none(), scale), support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal, options),
      ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal(), scale), support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(attention::attention_weights(in.q, in.k, attention::causal, options),
                               ref::weights(in.rq, in.rk, ref::Mask::causal(), scale),
                               support::tolerance<T>()));
  // And it differs from the default 1/sqrt(6) = 0.41: the override is not ignored.
  EXPECT_FALSE(
      support::is_near(attention::attention_weights(in.q, in.k, attention::causal, options),
                       attention::attention_weights(in.q, in.k, attention::causal), 1e-3));
}

TYPED_TEST(ScaledDotProductAttention, CrossAttentionWithOtherValueWidth) {
  // L = 5 queries over S = 9 keys, d_k = 6, d_v = 11.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(5, 9, 6, 11, 360);
  const Matrix<T> out = attention::scaled_dot_product_attention(in.q, in.k, in.v);
  ASSERT_EQ(out.rows(), 5);
  ASSERT_EQ(out.cols(), 11);
  EXPECT_TRUE(support::is_near(out, ref::attention(in.rq, in.rk, in.rv), support::tolerance<T>()));
  const support::BoolMatrix visible = support::random_keep(5, 9, 361, 0.5);
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(visible)),
      ref::attention(in.rq, in.rk, in.rv, ref::Mask::keep(visible)), support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, NonContiguousInputsAndOutput) {
  // q: a block of a bigger matrix; k: middle columns (row stride > width); v: a Map with inner
  // stride 3; out: a block of a bigger matrix, whose other entries must stay untouched.
  using T = TypeParam;
  const Index l = 10, s = 19, d_k = 7, d_v = 6;
  const Matrix<T> q_storage = support::random_matrix<T>(l + 4, d_k + 5, 370);
  const Matrix<T> k_storage = support::random_matrix<T>(s, d_k + 9, 371);
  const Matrix<T> v_storage = support::random_matrix<T>(s, 3 * d_v + 1, 372);
  const auto q = q_storage.block(2, 3, l, d_k);
  const auto k = k_storage.middleCols(4, d_k);
  using Strided = Eigen::Map<const Matrix<T>, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
  const Strided v(v_storage.data(), s, d_v,
                  Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(3 * d_v + 1, 3));
  ASSERT_EQ(v(2, 1), v_storage(2, 3));
  const RealMatrix rq = ref::to_real(q), rk = ref::to_real(k), rv = ref::to_real(v);

  Matrix<T> buffer = Matrix<T>::Constant(l + 3, d_v + 6, T(42));
  attention::scaled_dot_product_attention(q, k, v, buffer.block(1, 2, l, d_v), attention::causal);
  EXPECT_TRUE(support::is_near(buffer.block(1, 2, l, d_v),
                               ref::attention(rq, rk, rv, ref::Mask::causal()),
                               support::tolerance<T>()));
  EXPECT_EQ((buffer.array() == T(42)).count(), buffer.size() - l * d_v);

  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q, k, v),
                               ref::attention(rq, rk, rv), support::tolerance<T>()));
  Matrix<T> w_buffer = Matrix<T>::Constant(l + 2, s + 2, T(42));
  attention::attention_weights(q, k, w_buffer.block(1, 1, l, s));
  EXPECT_TRUE(
      support::is_near(w_buffer.block(1, 1, l, s), ref::weights(rq, rk), support::tolerance<T>()));
  EXPECT_EQ((w_buffer.array() == T(42)).count(), w_buffer.size() - l * s);
}

TYPED_TEST(ScaledDotProductAttention, ColumnMajorInputs) {
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(14, 11, 5, 8, 380);
  const ColMatrix<T> q = in.q, k = in.k, v = in.v;
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q, k, v, attention::causal),
                               ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal()),
                               support::tolerance<T>()));
  EXPECT_TRUE(support::is_near(attention::attention_weights(q, k), ref::weights(in.rq, in.rk),
                               support::tolerance<T>()));
  // Mixed layouts, and transposed views of column-major storage (row-major again).
  const ColMatrix<T> q_t = in.q.transpose();
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q_t.transpose(), in.k, v),
                               ref::attention(in.rq, in.rk, in.rv), support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, ExpressionInputs) {
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(8, 6, 4, 3, 390);
  const Matrix<T> k_t = in.k.transpose();
  const RealMatrix q2 = ref::to_real(Matrix<T>(T(2) * in.q));
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(T(2) * in.q, k_t.transpose(), in.v + in.v),
      ref::attention(q2, in.rk, ref::to_real(Matrix<T>(in.v + in.v))), support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, AttentionWeightsRowsSumToOne) {
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(23, 31, 9, 1, 400);
  for (const Matrix<T>& w : {attention::attention_weights(in.q, in.k),
                             attention::attention_weights(in.q, in.k, attention::causal)}) {
    EXPECT_TRUE((w.array() >= T(0)).all());
    EXPECT_TRUE(
        support::is_near(support::row_sums(w), RealMatrix::Ones(23, 1), support::tolerance<T>()));
  }
  EXPECT_TRUE(support::is_near(attention::attention_weights(in.q, in.k), ref::weights(in.rq, in.rk),
                               support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, OutputIsWeightsTimesValues) {
  // out = A v with A from attention_weights: the two entry points agree.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(20, 26, 8, 7, 410);
  const support::BoolMatrix visible = support::random_keep(20, 26, 411, 0.7);
  const Matrix<T> a = attention::attention_weights(in.q, in.k, attention::keep(visible));
  const RealMatrix av = ref::matmul(ref::to_real(a), in.rv);
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(visible)), av,
      support::tolerance<T>()));
}

TYPED_TEST(ScaledDotProductAttention, SingleKeyGivesItsValue) {
  // S = 1: every weight is exactly 1 and every output row is v's only row.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(6, 1, 4, 5, 420);
  const Matrix<T> w = attention::attention_weights(in.q, in.k);
  for (Index i = 0; i < 6; ++i) EXPECT_EQ(w(i, 0), T(1));
  const Matrix<T> out = attention::scaled_dot_product_attention(in.q, in.k, in.v);
  EXPECT_TRUE(support::is_near(out, in.v.replicate(6, 1), 0));
}

TYPED_TEST(ScaledDotProductAttention, EqualKeysGiveTheMeanOfValues) {
  // All keys equal: every score in a row is the same, the weights are 1/S, out = mean of v's rows.
  using T = TypeParam;
  const Inputs<T> in = inputs<T>(5, 7, 3, 4, 430);
  const Matrix<T> k = in.k.row(0).replicate(7, 1);
  const Matrix<T> out = attention::scaled_dot_product_attention(in.q, k, in.v);
  const Matrix<T> mean = in.v.colwise().mean();
  EXPECT_TRUE(support::is_near(out, mean.replicate(5, 1), support::tolerance<T>()));
}

// --- Aliasing: out may share memory with q, k or v -------------------------------------------
// Each result is compared with the long-double reference computed from the inputs as they were
// before the call: the output must not feed back into what the kernels still read.

// In-place self-attention x <- attention(x, x, x), a single tile and several, with and without the
// causal mask, and through a reused workspace.
TYPED_TEST(ScaledDotProductAttention, InPlaceSelfAttention) {
  using T = TypeParam;
  attention::AttentionWorkspace<T> workspace;
  unsigned seed = 440;
  for (const Index n : {5, 70}) {
    for (const bool causal : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "n " << n << " causal " << causal);
      Matrix<T> x = support::random_matrix<T>(n, 12, seed++);
      const RealMatrix rx = ref::to_real(x);
      const RealMatrix expected =
          ref::attention(rx, rx, rx, causal ? ref::Mask::causal() : ref::Mask::none());
      Matrix<T> y = x;
      if (causal) {
        attention::scaled_dot_product_attention(x, x, x, x, attention::causal);
        attention::scaled_dot_product_attention(y, y, y, y, workspace, attention::causal);
      } else {
        attention::scaled_dot_product_attention(x, x, x, x);
        attention::scaled_dot_product_attention(y, y, y, y, workspace);
      }
      EXPECT_TRUE(support::is_near(x, expected, support::tolerance<T>()));
      EXPECT_TRUE(support::is_near(y, expected, support::tolerance<T>()));
    }
  }
}

// out = v (L = S, d_v columns), and out a block of rows that overlaps q, k and v by all but one
// row.
TYPED_TEST(ScaledDotProductAttention, OutputSharingMemoryWithInputs) {
  using T = TypeParam;
  Inputs<T> in = inputs<T>(40, 40, 6, 9, 450);
  const RealMatrix expected = ref::attention(in.rq, in.rk, in.rv);
  attention::scaled_dot_product_attention(in.q, in.k, in.v, in.v);
  EXPECT_TRUE(support::is_near(in.v, expected, support::tolerance<T>()));

  Matrix<T> buffer = support::random_matrix<T>(41, 8, 451);
  const RealMatrix top = ref::to_real(buffer.topRows(40));
  attention::scaled_dot_product_attention(buffer.topRows(40), buffer.topRows(40),
                                          buffer.topRows(40), buffer.bottomRows(40));
  EXPECT_TRUE(support::is_near(buffer.bottomRows(40), ref::attention(top, top, top),
                               support::tolerance<T>()));
}

// attention_weights(q, k, q) and (q, k, k): the L x S weights written over an operand of q k^T
// (S = d_k, and L = S for k), with the default scale and with a scale above 1 (applied to the
// product rather than to q).
TYPED_TEST(ScaledDotProductAttention, AttentionWeightsIntoTheirOwnOperands) {
  using T = TypeParam;
  for (const double scale : {0.0, 1.5}) {
    SCOPED_TRACE(::testing::Message() << "scale " << scale);
    attention::Options options;
    if (scale > 0) options.scale = scale;
    const long double ref_scale = scale > 0 ? scale : ref::default_scale(5);
    Inputs<T> in = inputs<T>(5, 5, 5, 1, 460);
    const RealMatrix expected = ref::weights(in.rq, in.rk, ref::Mask::causal(), ref_scale);
    Matrix<T> q = in.q, k = in.k;
    attention::attention_weights(q, in.k, q, attention::causal, options);
    EXPECT_TRUE(support::is_near(q, expected, support::tolerance<T>()));
    attention::attention_weights(in.q, k, k, attention::causal, options);
    EXPECT_TRUE(support::is_near(k, expected, support::tolerance<T>()));
  }
}

// --- Non-finite inputs (policy in scaled_dot_product.hpp) --------------------------------------

template <typename T>
class AttentionNonFinite : public ::testing::Test {};
TYPED_TEST_SUITE(AttentionNonFinite, support::FastScalars, support::ScalarNames);

TYPED_TEST(AttentionNonFinite, NaNInQueryRowMakesOnlyThatOutputRowNaN) {
  using T = TypeParam;
  Inputs<T> in = inputs<T>(6, 40, 5, 4, 500);
  in.q(3, 2) = std::numeric_limits<T>::quiet_NaN();
  in.rq(3, 2) = std::numeric_limits<ref::Real>::quiet_NaN();
  for (const bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "unmasked");
    const Matrix<T> out =
        causal ? attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal)
               : attention::scaled_dot_product_attention(in.q, in.k, in.v);
    EXPECT_TRUE(out.row(3).array().isNaN().all()) << out;
    EXPECT_TRUE(out.topRows(3).allFinite() && out.bottomRows(2).allFinite()) << out;
    // is_near matches NaN with NaN only, so this checks row 3 and the others at once.
    EXPECT_TRUE(support::is_near(
        out, ref::attention(in.rq, in.rk, in.rv, causal ? ref::Mask::causal() : ref::Mask::none()),
        support::tolerance<T>()));
  }
}

TYPED_TEST(AttentionNonFinite, InfinityInQueryRowMakesOnlyThatOutputRowNaN) {
  // q(2, 0) = +inf and k's column 0 mixes signs (and has no zero): row 2's scores hold +inf and
  // -inf, so its softmax is inf - inf = NaN. Other rows are unaffected.
  using T = TypeParam;
  Inputs<T> in = inputs<T>(5, 9, 3, 4, 510);
  for (Index j = 0; j < 9; ++j) in.k(j, 0) = (j % 2 == 0 ? T(1) : T(-1)) * (T(0.5) + T(j));
  in.q(2, 0) = std::numeric_limits<T>::infinity();
  const Matrix<T> out = attention::scaled_dot_product_attention(in.q, in.k, in.v);
  EXPECT_TRUE(out.row(2).array().isNaN().all()) << out;
  EXPECT_TRUE(out.topRows(2).allFinite() && out.bottomRows(2).allFinite()) << out;
  EXPECT_TRUE(support::is_near(out, ref::attention(ref::to_real(in.q), ref::to_real(in.k), in.rv),
                               support::tolerance<T>()));
}

TYPED_TEST(AttentionNonFinite, NaNInKeyReachesOnlyQueriesThatSeeIt) {
  // Causal: key 3 is seen by queries 3.. only. Queries 0..2 must not notice its NaN.
  using T = TypeParam;
  Inputs<T> in = inputs<T>(7, 7, 4, 5, 520);
  in.k(3, 1) = std::numeric_limits<T>::quiet_NaN();
  const Matrix<T> out =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  EXPECT_TRUE(out.topRows(3).allFinite()) << out;
  EXPECT_TRUE(out.bottomRows(4).array().isNaN().all()) << out;
  EXPECT_TRUE(support::is_near(
      out.topRows(3), ref::rows(ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal()), 0, 3),
      support::tolerance<T>()));
  // The same with a keep mask hiding key 3 from every query but 5.
  support::BoolMatrix visible = support::BoolMatrix::Constant(7, 7, true);
  visible.col(3).setConstant(false);
  visible(5, 3) = true;
  const Matrix<T> kept =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(visible));
  EXPECT_TRUE(kept.row(5).array().isNaN().all()) << kept;
  EXPECT_TRUE(kept.topRows(5).allFinite() && kept.bottomRows(1).allFinite()) << kept;
}

TYPED_TEST(AttentionNonFinite, NaNInValueReachesOnlyQueriesThatSeeIt) {
  // Documented: "a NaN or inf in k or v reaches every query that can see that key". Causal: key 3
  // is hidden from queries 0..2, whose weight for it is exactly 0, key 4 from queries 0..3.
  using T = TypeParam;
  Inputs<T> in = inputs<T>(7, 7, 4, 5, 530);
  in.v(3, 2) = std::numeric_limits<T>::quiet_NaN();
  in.v(4, 0) = std::numeric_limits<T>::infinity();
  in.rv(3, 2) = std::numeric_limits<ref::Real>::quiet_NaN();
  in.rv(4, 0) = std::numeric_limits<ref::Real>::infinity();
  const Matrix<T> out =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  EXPECT_TRUE(out.topRows(3).allFinite()) << out;
  EXPECT_TRUE(out.bottomRows(4).col(2).array().isNaN().all()) << out;
  EXPECT_TRUE((out.bottomRows(3).col(0).array() == std::numeric_limits<T>::infinity()).all())
      << out;
  // is_near matches NaN with NaN and an infinity with the same infinity only: every entry at once.
  EXPECT_TRUE(support::is_near(out, ref::attention(in.rq, in.rk, in.rv, ref::Mask::causal()),
                               support::tolerance<T>()));
}

TYPED_TEST(AttentionNonFinite, NaNInKeyHiddenByMinusInfinityBiasReachesNoQuery) {
  // A -inf bias hides a key like causal or keep() does (mask.hpp); then its NaN score must not
  // reach the query.
  using T = TypeParam;
  Inputs<T> in = inputs<T>(4, 4, 3, 2, 540);
  in.k(3, 0) = std::numeric_limits<T>::quiet_NaN();
  Matrix<T> b = Matrix<T>::Zero(4, 4);
  b.col(3).head(3).setConstant(-std::numeric_limits<T>::infinity());
  const Matrix<T> out =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(b));
  EXPECT_TRUE(out.topRows(3).allFinite()) << out;
}

// --- Shape checks: one test per check ---------------------------------------------------------

class ScaledDotProductAttentionShapes : public ::testing::Test {
 protected:
  const Matrix<double> q = Matrix<double>::Ones(3, 4), k = Matrix<double>::Ones(5, 4),
                       v = Matrix<double>::Ones(5, 2);
  Matrix<double> out = Matrix<double>::Zero(3, 2);
  static Matrix<double> zeros(Index rows, Index cols) { return Matrix<double>::Zero(rows, cols); }
};

TEST_F(ScaledDotProductAttentionShapes, AcceptsConsistentShapes) {
  EXPECT_NO_THROW(attention::scaled_dot_product_attention(q, k, v, out));
  Matrix<double> weights(3, 5);
  EXPECT_NO_THROW(attention::attention_weights(q, k, weights));
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsOnZeroQueries) {
  Matrix<double> empty(0, 2);
  EXPECT_THROW(attention::scaled_dot_product_attention(zeros(0, 4), k, v, empty),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsOnZeroKeys) {
  EXPECT_THROW(attention::scaled_dot_product_attention(q, zeros(0, 4), zeros(0, 2), out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsOnZeroKeyWidth) {
  EXPECT_THROW(attention::scaled_dot_product_attention(zeros(3, 0), zeros(5, 0), v, out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsWhenKeyWidthDiffersFromQueryWidth) {
  EXPECT_THROW(attention::scaled_dot_product_attention(q, zeros(5, 3), v, out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsWhenValueRowsDifferFromKeyRows) {
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, zeros(4, 2), out),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsOnZeroValueWidth) {
  Matrix<double> empty(3, 0);
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, zeros(5, 0), empty),
               attention::ShapeError);
  // The allocating overload too.
  EXPECT_THROW((void)attention::scaled_dot_product_attention(q, k, zeros(5, 0)),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsWhenOutHasOtherRowCount) {
  Matrix<double> wrong(4, 2);
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, v, wrong), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsWhenOutHasOtherColumnCount) {
  Matrix<double> wrong(3, 3);
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, v, wrong), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsOnKeepMaskOfWrongShape) {
  const support::BoolMatrix rows_wrong = support::BoolMatrix::Constant(4, 5, true);
  const support::BoolMatrix cols_wrong = support::BoolMatrix::Constant(3, 4, true);
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, v, out, attention::keep(rows_wrong)),
               attention::ShapeError);
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, v, out, attention::keep(cols_wrong)),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, ThrowsOnBiasMaskOfWrongShape) {
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, v, out, attention::bias(zeros(2, 5))),
               attention::ShapeError);
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, v, out, attention::bias(zeros(3, 6))),
               attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsOnZeroQueries) {
  EXPECT_THROW((void)attention::attention_weights(zeros(0, 4), k), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsOnZeroKeys) {
  EXPECT_THROW((void)attention::attention_weights(q, zeros(0, 4)), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsOnZeroKeyWidth) {
  EXPECT_THROW((void)attention::attention_weights(zeros(3, 0), zeros(5, 0)), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsWhenKeyWidthDiffers) {
  EXPECT_THROW((void)attention::attention_weights(q, zeros(5, 6)), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsWhenOutHasOtherRowCount) {
  Matrix<double> wrong(2, 5);
  EXPECT_THROW(attention::attention_weights(q, k, wrong), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsWhenOutHasOtherColumnCount) {
  Matrix<double> wrong(3, 4);
  EXPECT_THROW(attention::attention_weights(q, k, wrong), attention::ShapeError);
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsThrowsOnMaskOfWrongShape) {
  const support::BoolMatrix wrong = support::BoolMatrix::Constant(3, 4, true);
  EXPECT_THROW((void)attention::attention_weights(q, k, attention::keep(wrong)),
               attention::ShapeError);
  EXPECT_THROW((void)attention::attention_weights(q, k, attention::bias(zeros(4, 5))),
               attention::ShapeError);
}

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

TEST_F(ScaledDotProductAttentionShapes, MessageNamesFunctionArgumentsAndSizes) {
  EXPECT_EQ(
      shape_error_message([&] { attention::scaled_dot_product_attention(q, zeros(5, 3), v, out); }),
      "attention::scaled_dot_product_attention: k.cols() (= 3) must equal q.cols() (= 4)");
  EXPECT_EQ(
      shape_error_message([&] { attention::scaled_dot_product_attention(q, k, zeros(4, 2), out); }),
      "attention::scaled_dot_product_attention: v.rows() (= 4) must equal k.rows() (= 5)");
  Matrix<double> wrong(3, 3);
  EXPECT_EQ(shape_error_message([&] { attention::scaled_dot_product_attention(q, k, v, wrong); }),
            "attention::scaled_dot_product_attention: out.cols() (= 3) must equal v.cols() (= 2)");
  Matrix<double> empty(0, 2);
  EXPECT_EQ(
      shape_error_message(
          [&] { attention::scaled_dot_product_attention(zeros(0, 4), k, v, empty); }),
      "attention::scaled_dot_product_attention: q.rows() (number of queries) (= 0) must be at "
      "least 1");
}

TEST_F(ScaledDotProductAttentionShapes, AttentionWeightsMessageNamesFunctionArgumentsAndSizes) {
  EXPECT_EQ(shape_error_message([&] { (void)attention::attention_weights(q, zeros(5, 6)); }),
            "attention::attention_weights: k.cols() (= 6) must equal q.cols() (= 4)");
  Matrix<double> wrong(3, 4);
  EXPECT_EQ(shape_error_message([&] { attention::attention_weights(q, k, wrong); }),
            "attention::attention_weights: out.cols() (= 4) must equal k.rows() (= 5)");
}

TEST_F(ScaledDotProductAttentionShapes, ShapeErrorIsAnInvalidArgument) {
  EXPECT_THROW(attention::scaled_dot_product_attention(q, k, zeros(4, 2), out),
               std::invalid_argument);
}

}  // namespace
