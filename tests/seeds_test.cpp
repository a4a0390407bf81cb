// SPDX-License-Identifier: MIT
// The worked examples of the source documents (../shared/seeds/, see its README), reproduced to
// the precision they print. Expected numbers are the documents' printouts; where the library has
// no public function for a step (raw and scaled scores), the step is checked through the
// long-double reference (support/reference.hpp), which this also validates against the documents.

#include <gtest/gtest.h>

#include <attention/attention.hpp>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

// tests/CMakeLists.txt builds this file with ATTENTION_NO_DISPATCH: the seeds' numbers must also
// hold on the kernels compiled for the flags alone.
#ifdef ATTENTION_NO_DISPATCH
static_assert(ATTENTION_HAS_DISPATCH == 0, "ATTENTION_NO_DISPATCH must turn the dispatch off");
#endif

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using Real = long double;
using RealMatrix = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic>;

constexpr Real minus_inf = -std::numeric_limits<Real>::infinity();

/// A matrix of T from a printed table.
template <typename T, std::size_t R, std::size_t C>
Matrix<T> table(const Real (&rows)[R][C]) {
  Matrix<T> m(static_cast<Index>(R), static_cast<Index>(C));
  for (std::size_t i = 0; i < R; ++i) {
    for (std::size_t j = 0; j < C; ++j) m(Index(i), Index(j)) = static_cast<T>(rows[i][j]);
  }
  return m;
}

/// q k^T through the library's product path: attention::project(q, k^T, 0) = q k^T.
template <typename T>
Matrix<T> library_scores(const Matrix<T>& q, const Matrix<T>& k) {
  return attention::project(q, k.transpose(), attention::RowVector<T>::Zero(k.rows()));
}

/// First-order bound on the error of softmax weights p (L x S) when each score s_ij entering the
/// softmax may be off by ds_ij:
///   dp_j = p_j (ds_j - sum_l p_l ds_l) = p_j sum_{l != j} p_l (ds_j - ds_l)
///   =>  |dp_ij| <= p_ij sum_{l != j} p_il (ds_ij + ds_il).
RealMatrix weight_error_bound(const RealMatrix& p, const RealMatrix& ds) {
  RealMatrix b(p.rows(), p.cols());
  for (Index i = 0; i < p.rows(); ++i) {
    for (Index j = 0; j < p.cols(); ++j) {
      Real sum = 0;
      for (Index l = 0; l < p.cols(); ++l) {
        if (l != j) sum += p(i, l) * (ds(i, j) + ds(i, l));
      }
      b(i, j) = p(i, j) * sum;
    }
  }
  return b;
}

// ---------------------------------------------------------------------------------------------
// Seed 000 (French notebook): 3 tokens t1..t3, d_k = 2, everything printed to 3 decimals.
//   Q = [[1 0] [0 1] [1 1]],  K = [[1 0] [1 1] [0 1]],  V = [[1 0] [0 1] [1 1]]
//   S = Q K^T / sqrt(2) = [[1 1 0] [0 1 1] [1 2 1]] / sqrt(2) = [[.707 .707 0] [0 .707 .707]
//       [.707 1.414 .707]]
//   A, row t1: e^.7071 = 2.0281, so (2.0281, 2.0281, 1) / 5.0562 = (.401, .401, .198); row t2 is
//       the same permuted; row t3: e^1.4142 = 4.1133, (2.0281, 4.1133, 2.0281) / 8.1695
//       = (.248, .503, .248)
//   O = A V, t1: .401 [1 0] + .401 [0 1] + .198 [1 1] = [.599 .599]; t2: [.599 .802];
//       t3: .248 [1 0] + .503 [0 1] + .248 [1 1] = [.497 .752]
// Tolerance: half a unit in the third decimal (5e-4) plus the library's own rounding.

constexpr Real seed000_q[3][2] = {{1, 0}, {0, 1}, {1, 1}};
constexpr Real seed000_k[3][2] = {{1, 0}, {1, 1}, {0, 1}};
constexpr Real seed000_v[3][2] = {{1, 0}, {0, 1}, {1, 1}};
constexpr Real seed000_s[3][3] = {{0.707, 0.707, 0.}, {0., 0.707, 0.707}, {0.707, 1.414, 0.707}};
constexpr Real seed000_a[3][3] = {
    {0.401, 0.401, 0.198}, {0.198, 0.401, 0.401}, {0.248, 0.503, 0.248}};
constexpr Real seed000_o[3][2] = {{0.599, 0.599}, {0.599, 0.802}, {0.497, 0.752}};

template <typename T>
class Seed000 : public ::testing::Test {
 protected:
  const Matrix<T> q = table<T>(seed000_q), k = table<T>(seed000_k), v = table<T>(seed000_v);
  const long double tol = 5e-4L + support::tolerance<T>();
};
using FloatAndDouble = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Seed000, FloatAndDouble, support::ScalarNames);

TYPED_TEST(Seed000, ScaledScores) {
  EXPECT_TRUE(support::is_near(ref::masked_scores(ref::to_real(this->q), ref::to_real(this->k)),
                               table<Real>(seed000_s), 5e-4L));
  // The library's product, scaled by 1/sqrt(d_k) = 1/sqrt(2).
  const TypeParam scale = TypeParam(1 / std::sqrt(2.0L));
  EXPECT_TRUE(support::is_near(library_scores(this->q, this->k) * scale, table<Real>(seed000_s),
                               this->tol));
}

TYPED_TEST(Seed000, AttentionWeights) {
  EXPECT_TRUE(support::is_near(attention::attention_weights(this->q, this->k),
                               table<Real>(seed000_a), this->tol));
}

TYPED_TEST(Seed000, RowSumsAreOne) {
  // Printed: [1. 1. 1.]
  const auto sums = support::row_sums(attention::attention_weights(this->q, this->k));
  EXPECT_TRUE(support::is_near(sums, RealMatrix::Ones(3, 1), this->tol));
}

TYPED_TEST(Seed000, Output) {
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(this->q, this->k, this->v),
                               table<Real>(seed000_o), this->tol));
}

// ---------------------------------------------------------------------------------------------
// Seed 001 (NumPy notebook): x (3 tokens x 4 features), W_q, W_k, W_v = np.random.rand(4, 4), a
// softmax without the max subtraction. Its weights are random and not printed, so the properties
// are tested, over several draws of the weights: shapes (3 x 3 weights, 3 x 4 output), weights in
// [0, 1] with rows summing to 1, agreement with the reference, and each output feature between
// the smallest and largest value of that feature in V (a convex combination). The second run
// (x five times larger, weights nearly one-hot: 1e-14, 1e-17) is pushed further: inputs scaled
// until the notebook's naive exp() overflows.

template <typename T>
struct Seed001Run {
  Matrix<T> q, k, v;
};

/// Q = x W_q, K = x W_k, V = x W_v with W ~ U(0, 1), like np.random.rand, from `seed`.
template <typename T>
Seed001Run<T> seed001_run(const Matrix<T>& x, std::uint32_t seed) {
  const auto w = [&](std::uint32_t s) { return support::random_uniform<T>(4, 4, s, 0.0, 1.0); };
  return {x * w(3 * seed), x * w(3 * seed + 1), x * w(3 * seed + 2)};
}

template <typename T>
Matrix<T> seed001_x_first() {
  Matrix<T> x(3, 4);
  x << 1, 0, 1, 0, 0, 2, 0, 2, 1, 1, 1, 1;
  return x;
}

template <typename T>
Matrix<T> seed001_x_second() {
  Matrix<T> x(3, 4);
  x << 5, 0, 5, 0, 0, 5, 0, 5, 1, 1, 1, 1;
  return x;
}

/// Tolerances for a seed 001 run, whose scores reach ~40 (second x) or ~1000 (scaled up below),
/// not the order 1 that support::tolerance assumes. The scores' rounding in T is bounded by the
/// dot-product bound (Higham, Accuracy and Stability, eq. 3.5) plus one rounding for the scale:
///   ds_ij = (gamma_4 + u) scale sum_c |q_ic k_jc|,  gamma_4 = 4u / (1 - 4u),  u = eps / 2,
/// and carried to the weights by weight_error_bound. The weights get that plus the order-1
/// tolerance for the softmax's own rounding; the outputs sum_j |dp_ij| |v_jc| plus the order-1
/// tolerance relative to the largest |v|.
template <typename T>
struct Seed001Tolerances {
  RealMatrix weights, output;
};

template <typename T>
Seed001Tolerances<T> seed001_tolerances(const Seed001Run<T>& run) {
  const Real u = std::numeric_limits<T>::epsilon() / 2.0L, gamma = 4 * u / (1 - 4 * u) + u;
  const Real scale = 0.5L;  // 1 / sqrt(d_k), d_k = 4
  RealMatrix ds(3, 3);
  for (Index i = 0; i < 3; ++i) {
    for (Index j = 0; j < 3; ++j) {
      Real sum = 0;
      for (Index c = 0; c < 4; ++c) sum += std::fabs(Real(run.q(i, c)) * Real(run.k(j, c)));
      ds(i, j) = gamma * scale * sum;
    }
  }
  const RealMatrix p = ref::weights(ref::to_real(run.q), ref::to_real(run.k));
  const RealMatrix dp = weight_error_bound(p, ds);
  const Real v_max = std::max<Real>(1, ref::to_real(run.v).cwiseAbs().maxCoeff());
  Seed001Tolerances<T> tol{(dp.array() + support::tolerance<T>()).matrix(), RealMatrix(3, 4)};
  for (Index i = 0; i < 3; ++i) {
    for (Index c = 0; c < 4; ++c) {
      Real sum = support::tolerance<T>() * v_max;
      for (Index j = 0; j < 3; ++j) sum += dp(i, j) * std::fabs(Real(run.v(j, c)));
      tol.output(i, c) = sum;
    }
  }
  return tol;
}

template <typename T>
class Seed001 : public ::testing::Test {};
TYPED_TEST_SUITE(Seed001, FloatAndDouble, support::ScalarNames);

TYPED_TEST(Seed001, ShapesRowSumsAndConvexOutputs) {
  using T = TypeParam;
  for (const Matrix<T>& x : {seed001_x_first<T>(), seed001_x_second<T>()}) {
    for (std::uint32_t draw = 1; draw <= 5; ++draw) {
      SCOPED_TRACE(::testing::Message() << "draw " << draw << ", x =\n" << x);
      const Seed001Run<T> run = seed001_run(x, draw);
      const Matrix<T> weights = attention::attention_weights(run.q, run.k);
      const Matrix<T> output = attention::scaled_dot_product_attention(run.q, run.k, run.v);
      ASSERT_EQ(weights.rows(), 3);
      ASSERT_EQ(weights.cols(), 3);
      ASSERT_EQ(output.rows(), 3);
      ASSERT_EQ(output.cols(), 4);
      EXPECT_TRUE((weights.array() >= T(0)).all() && (weights.array() <= T(1)).all());
      EXPECT_TRUE(support::is_near(support::row_sums(weights), RealMatrix::Ones(3, 1),
                                   support::tolerance<T>()));
      // Scores reach ~40 with the second x, so weights go down to ~1e-17 as in the notebook.
      const Seed001Tolerances<T> tol = seed001_tolerances(run);
      const RealMatrix q = ref::to_real(run.q), k = ref::to_real(run.k), v = ref::to_real(run.v);
      EXPECT_TRUE(support::is_near_entrywise(weights, ref::weights(q, k), tol.weights));
      EXPECT_TRUE(support::is_near_entrywise(output, ref::attention(q, k, v), tol.output));
      for (Index c = 0; c < 4; ++c) {
        const T lo = run.v.col(c).minCoeff(), hi = run.v.col(c).maxCoeff();
        const T slack = T(tol.output.col(c).maxCoeff());
        EXPECT_TRUE((output.col(c).array() >= lo - slack).all() &&
                    (output.col(c).array() <= hi + slack).all())
            << "feature " << c;
      }
    }
  }
}

TYPED_TEST(Seed001, InputsThatOverflowANaiveExpStillGiveCorrectWeights) {
  using T = TypeParam;
  // Scores grow as c^2 when x is scaled by c. Pick c so that the largest score is 1.5 times the
  // largest argument exp() takes in T (88.7 float, 709.8 double).
  const Matrix<T> x1 = seed001_x_second<T>();
  const Seed001Run<T> unscaled = seed001_run(x1, 7);
  const long double s1 =
      ref::masked_scores(ref::to_real(unscaled.q), ref::to_real(unscaled.k)).maxCoeff();
  const long double c = std::sqrt(1.5L * std::log(std::numeric_limits<T>::max()) / s1);
  const Matrix<T> x = (x1.template cast<long double>() * c).template cast<T>();
  const Seed001Run<T> run = seed001_run(x, 7);
  const T scale = T(1) / std::sqrt(T(4));
  const Matrix<T> scores = (run.q * run.k.transpose()) * scale;

  // The notebook's softmax: np.exp(s) / np.sum(np.exp(s), axis=1, keepdims=True).
  const Matrix<T> e = scores.array().exp().matrix();
  Matrix<T> naive(3, 3);
  for (Index i = 0; i < 3; ++i) naive.row(i) = e.row(i) / e.row(i).sum();
  ASSERT_FALSE(naive.allFinite()) << "inputs not large enough to break the naive softmax:\n"
                                  << scores;

  const Seed001Tolerances<T> tol = seed001_tolerances(run);
  const RealMatrix q = ref::to_real(run.q), k = ref::to_real(run.k), v = ref::to_real(run.v);
  const Matrix<T> weights = attention::attention_weights(run.q, run.k);
  EXPECT_TRUE(weights.allFinite()) << weights;
  EXPECT_TRUE(support::is_near(support::row_sums(weights), RealMatrix::Ones(3, 1),
                               support::tolerance<T>()));
  EXPECT_TRUE(support::is_near_entrywise(weights, ref::weights(q, k), tol.weights));

  const Matrix<T> softmax = attention::softmax_rows(scores);
  EXPECT_TRUE(softmax.allFinite());
  EXPECT_TRUE(
      support::is_near(softmax, ref::softmax_rows(ref::to_real(scores)), support::tolerance<T>()));

  const Matrix<T> output = attention::scaled_dot_product_attention(run.q, run.k, run.v);
  EXPECT_TRUE(output.allFinite()) << output;
  EXPECT_TRUE(support::is_near_entrywise(output, ref::attention(q, k, v), tol.output));
}

// ---------------------------------------------------------------------------------------------
// Seed 002 (NumPy notebook): random q, k, v, L = 4, d_k = d_v = 8, causal mask built as
// tril(ones) -> 0 / -inf and added to the scaled scores. Everything printed with 8 decimals.
//
// Tolerances. The printed q and k are themselves rounded: q to 9 significant digits (e-notation
// with 8 decimals), |dq| <= 0.5e-8 * 10^floor(log10 |q|); k to 8 decimals, |dk| <= 5e-9. A printed
// result is therefore expected within half a unit of its last digit (5e-9) plus the effect of the
// input rounding, bounded entry by entry to first order:
//   qk:      b_ij = sum_c |dq_ic| |k_jc| + |q_ic| |dk_jc|          (up to 6.2e-8)
//   scaled:  b_ij / sqrt(8)
//   weights: weight_error_bound(p, ds) with ds = b / sqrt(8)
// plus the library's rounding. NumPy on the printed inputs: the largest |error| / bound is 0.41
// (qk), 0.50 (scaled) and 0.71 (weights), so the bounds hold with little room to spare.
//
// V is printed only up to its first row's fifth entry ("-1.189"). It is reconstructed from the
// printed output: new_v = A v with A lower-triangular and A_ii > 0, so by forward substitution
//   v_i = (new_v_i - sum_{j < i} A_ij v_j) / A_ii,  i = 0..3,
// with A the reference's weights for the printed q and k. Row 0 of A is (1, 0, 0, 0), so v_0 =
// new_v_0, which must start like the printed V.

constexpr Real seed002_q[4][8] = {
    {1.81007476e+00L, 5.79714443e-01L, 1.76340488e+00L, -1.36508567e+00L, -6.16563287e-01L,
     2.25550782e-01L, 6.97932570e-01L, 4.53068254e-01L},
    {4.40413862e-01L, 1.41182465e+00L, 1.12179795e+00L, 2.55940040e+00L, -6.11930195e-01L,
     -1.29197911e+00L, 4.35326619e-01L, 5.87760655e-01L},
    {1.37479398e-01L, 4.75943855e-01L, 1.70270553e-01L, -2.99509648e-01L, -9.17416007e-01L,
     3.41058826e-02L, 1.35763200e-01L, 7.02759309e-04L},
    {-1.02789839e+00L, -1.25648099e+00L, -2.10596641e+00L, 8.53510939e-03L, -1.08815736e+00L,
     2.73482192e-01L, -2.95768431e-01L, -1.63643952e+00L},
};
constexpr Real seed002_k[4][8] = {
    {0.23806166L, 0.81478651L, 0.1867359L, -0.23954279L, -0.43809154L, 0.71938587L, 0.32942035L,
     -0.7737555L},
    {1.30796644L, 0.28949965L, 0.46690281L, -0.79771644L, -0.23239687L, 1.46718916L, 0.96671762L,
     1.31305307L},
    {-1.02961989L, 0.32733656L, 1.25499661L, -1.8275007L, 0.46145633L, 0.21470431L, 1.32039387L,
     0.97140891L},
    {0.02289806L, 0.28978226L, 0.05236321L, 0.60885248L, 0.7258343L, 1.19419763L, -0.34371495L,
     -1.39029048L},
};
constexpr Real seed002_qk[4][4] = {
    {1.8712587L, 6.19145356L, 4.15940504L, -1.57731701L},
    {-0.12115231L, -1.09390409L, -2.67478445L, -0.91758004L},
    {0.99468909L, 1.03143942L, 0.53920418L, -0.70517691L},
    {0.17845267L, -4.47881966L, -4.43512822L, 1.42083484L},
};
constexpr Real seed002_scaled[4][4] = {
    {0.66158986L, 2.1890094L, 1.47057175L, -0.55766578L},
    {-0.04283381L, -0.3867535L, -0.94567911L, -0.32441353L},
    {0.3516757L, 0.3646689L, 0.19063747L, -0.24931769L},
    {0.06309255L, -1.58350188L, -1.56805462L, 0.50234097L},
};
constexpr Real seed002_mask[4][4] = {
    {0, minus_inf, minus_inf, minus_inf},
    {0, 0, minus_inf, minus_inf},
    {0, 0, 0, minus_inf},
    {0, 0, 0, 0},
};
constexpr Real seed002_masked[4][4] = {
    {0.66158986L, minus_inf, minus_inf, minus_inf},
    {-0.04283381L, -0.3867535L, minus_inf, minus_inf},
    {0.3516757L, 0.3646689L, 0.19063747L, minus_inf},
    {0.06309255L, -1.58350188L, -1.56805462L, 0.50234097L},
};
constexpr Real seed002_attention[4][4] = {
    {1.0L, 0.0L, 0.0L, 0.0L},
    {0.58514235L, 0.41485765L, 0.0L, 0.0L},
    {0.34912087L, 0.35368667L, 0.29719247L, 0.0L},
    {0.34014176L, 0.06554704L, 0.06656742L, 0.52774378L},
};
constexpr Real seed002_new_v[4][8] = {
    {1.37933415L, -0.10749346L, -1.57829697L, 1.22250701L, -1.18933662L, -0.12370067L, -0.05942792L,
     0.01060972L},
    {1.0330743L, -0.28357112L, -0.41087137L, 1.02617547L, -0.22353044L, -0.47738086L, 0.29065512L,
     -0.22642169L},
    {1.09051302L, -0.51897789L, -0.59980993L, 0.60701144L, 0.63950322L, -0.53760485L, -0.12560718L,
     -0.02638372L},
    {0.42173924L, -1.45392657L, -0.18455794L, -0.23598787L, -0.85649913L, -0.09220333L,
     -0.85970381L, 0.12538971L},
};
// The printout of V, cut after "[[ 1.37933415 -0.10749346 -1.57829697  1.22250701 -1.189".
constexpr Real seed002_v_first_row_printed[4] = {1.37933415L, -0.10749346L, -1.57829697L,
                                                 1.22250701L};

constexpr Real half_unit_8_decimals = 5e-9L;

/// Half a unit in the last printed digit of each entry of seed 002's q (e-notation, 8 decimals).
RealMatrix seed002_q_rounding() {
  const RealMatrix q = table<Real>(seed002_q);
  RealMatrix d(q.rows(), q.cols());
  for (Index i = 0; i < q.rows(); ++i) {
    for (Index j = 0; j < q.cols(); ++j) {
      d(i, j) = 0.5L * std::pow(10.0L, std::floor(std::log10(std::fabs(q(i, j)))) - 8);
    }
  }
  return d;
}

/// First-order bound on |d(q k^T)_ij| from the rounding of the printed q and k (see above).
RealMatrix seed002_score_bound() {
  const RealMatrix q = table<Real>(seed002_q), k = table<Real>(seed002_k);
  const RealMatrix dq = seed002_q_rounding();
  RealMatrix b(4, 4);
  for (Index i = 0; i < 4; ++i) {
    for (Index j = 0; j < 4; ++j) {
      Real sum = 0;
      for (Index c = 0; c < 8; ++c) {
        sum += dq(i, c) * std::fabs(k(j, c)) + std::fabs(q(i, c)) * half_unit_8_decimals +
               dq(i, c) * half_unit_8_decimals;
      }
      b(i, j) = sum;
    }
  }
  return b;
}

/// The bound on each printed weight, from ds = score bound / sqrt(8) (see above).
RealMatrix seed002_weight_bound() {
  const RealMatrix p =
      ref::weights(table<Real>(seed002_q), table<Real>(seed002_k), ref::Mask::causal());
  return weight_error_bound(p, seed002_score_bound() / std::sqrt(8.0L));
}

/// v from the printed output by forward substitution (see above).
RealMatrix seed002_v() {
  const RealMatrix a =
      ref::weights(table<Real>(seed002_q), table<Real>(seed002_k), ref::Mask::causal());
  const RealMatrix new_v = table<Real>(seed002_new_v);
  RealMatrix v(4, 8);
  for (Index i = 0; i < 4; ++i) {
    for (Index c = 0; c < 8; ++c) {
      Real rest = new_v(i, c);
      for (Index j = 0; j < i; ++j) rest -= a(i, j) * v(j, c);
      v(i, c) = rest / a(i, i);
    }
  }
  return v;
}

template <typename T>
class Seed002 : public ::testing::Test {
 protected:
  const Matrix<T> q = table<T>(seed002_q), k = table<T>(seed002_k);
  const RealMatrix score_tol =
      (seed002_score_bound().array() + half_unit_8_decimals + support::tolerance<T>()).matrix();
  const RealMatrix scaled_tol = (seed002_score_bound().array() / std::sqrt(8.0L) +
                                 half_unit_8_decimals + support::tolerance<T>())
                                    .matrix();
  const RealMatrix weight_tol =
      (seed002_weight_bound().array() + half_unit_8_decimals + support::tolerance<T>()).matrix();
};
using DoubleAndLongDouble = ::testing::Types<double, long double>;
TYPED_TEST_SUITE(Seed002, DoubleAndLongDouble, support::ScalarNames);

TYPED_TEST(Seed002, Scores) {
  // np.matmul(q, k.T)
  const RealMatrix expected = table<Real>(seed002_qk);
  EXPECT_TRUE(
      support::is_near_entrywise(library_scores(this->q, this->k), expected, this->score_tol));
  EXPECT_TRUE(support::is_near_entrywise(ref::scores(ref::to_real(this->q), ref::to_real(this->k)),
                                         expected, this->score_tol));
}

TYPED_TEST(Seed002, ScaledScores) {
  // np.matmul(q, k.T) / np.sqrt(d_k)
  EXPECT_TRUE(
      support::is_near_entrywise(ref::masked_scores(ref::to_real(this->q), ref::to_real(this->k)),
                                 table<Real>(seed002_scaled), this->scaled_tol));
}

TYPED_TEST(Seed002, MaskedScoresAreMinusInfinityExactlyAboveTheDiagonal) {
  // scaled + mask, mask = tril(ones) with 0 -> -inf and 1 -> 0. The reference's causal mask and
  // the library's (attention::causal.apply on the printed scaled scores) give the printout, with
  // -inf exactly where masked and the other entries untouched.
  using T = TypeParam;
  EXPECT_TRUE(support::is_near_entrywise(
      ref::masked_scores(ref::to_real(this->q), ref::to_real(this->k), ref::Mask::causal()),
      table<Real>(seed002_masked), this->scaled_tol));
  Matrix<T> scaled = table<T>(seed002_scaled);
  attention::causal.apply(scaled.data(), scaled.outerStride(), 0, 4, 0, 4);
  EXPECT_TRUE(support::is_near(scaled, table<T>(seed002_masked), 0));
  // The notebook's additive mask itself.
  Matrix<T> added = table<T>(seed002_scaled) + table<T>(seed002_mask);
  EXPECT_TRUE(support::is_near(added, table<T>(seed002_masked), 0));
}

TYPED_TEST(Seed002, AttentionWeights) {
  using T = TypeParam;
  const Matrix<T> causal = attention::attention_weights(this->q, this->k, attention::causal);
  EXPECT_TRUE(support::is_near_entrywise(causal, table<Real>(seed002_attention), this->weight_tol));
  // Masked weights are exactly 0, and query 0 sees only key 0: weight exactly 1.
  for (Index i = 0; i < 4; ++i) {
    for (Index j = i + 1; j < 4; ++j) EXPECT_EQ(causal(i, j), T(0)) << i << ", " << j;
  }
  EXPECT_EQ(causal(0, 0), T(1));
  // The notebook's way: the 0 / -inf matrix added to the scores.
  const Matrix<T> mask = table<T>(seed002_mask);
  EXPECT_TRUE(
      support::is_near(attention::attention_weights(this->q, this->k, attention::bias(mask)),
                       causal, support::tolerance<T>()));
}

TYPED_TEST(Seed002, ReconstructedValuesMatchThePrintedFirstRow) {
  const RealMatrix v = seed002_v();
  for (Index c = 0; c < 4; ++c) {
    EXPECT_NEAR(static_cast<double>(v(0, c)), static_cast<double>(seed002_v_first_row_printed[c]),
                5e-9);
  }
  // The fifth entry is cut after "-1.189": it lies in (-1.1900, -1.1890].
  EXPECT_GT(v(0, 4), -1.1900L);
  EXPECT_LE(v(0, 4), -1.1890L);
}

TYPED_TEST(Seed002, Output) {
  // np.matmul(attention, v). v was derived from this printout with the reference's weights, so
  // reference weights reproduce it exactly; the check is that the library's causal attention, to
  // half a unit in the 8th decimal, applies the same weights (a wrong mask, scale or softmax moves
  // these outputs by 1e-2 or more).
  using T = TypeParam;
  const Matrix<T> v = seed002_v().cast<T>();
  const RealMatrix expected = table<Real>(seed002_new_v);
  const long double tol = half_unit_8_decimals + support::tolerance<T>();
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(this->q, this->k, v, attention::causal), expected,
      tol));
  const Matrix<T> mask = table<T>(seed002_mask);
  EXPECT_TRUE(support::is_near(
      attention::scaled_dot_product_attention(this->q, this->k, v, attention::bias(mask)), expected,
      tol));
}

// ---------------------------------------------------------------------------------------------
// Seed 003 (slides after 3Blue1Brown, chapter 6): GPT-3 has d_model = 12288 and 96 heads of 128
// per layer, 96 layers. One head owns d_model x 128 of each of W_Q, W_K, W_V and 128 x d_model of
// W_O: 4 * 12288 * 128 = 6,291,456 weights, "6,3 millions de parametres". A layer has 96 of them,
// 603,979,776, and 96 layers 57,982,058,496: "58 milliards de parametres dedies a l'attention".
// MultiHeadShape does this arithmetic without allocating a 12288-wide layer.

TEST(Seed003, Gpt3ParametersPerHead) {
  const attention::MultiHeadShape gpt3(12288, 96);
  EXPECT_EQ(gpt3.head_dim(), 128);
  EXPECT_EQ(gpt3.weights_per_head(), std::int64_t{6'291'456});
  EXPECT_EQ(std::llround(static_cast<double>(gpt3.weights_per_head()) / 1e5), 63);  // 6.3 M
}

TEST(Seed003, Gpt3AttentionParametersOfNinetySixLayers) {
  const attention::MultiHeadShape gpt3(12288, 96);
  EXPECT_EQ(gpt3.weight_count(), std::int64_t{603'979'776});  // 4 * 12288^2
  const std::int64_t all_layers = 96 * gpt3.weight_count();
  EXPECT_EQ(all_layers, std::int64_t{57'982'058'496});
  EXPECT_EQ(std::llround(static_cast<double>(all_layers) / 1e9), 58);  // 58 B
}

// ---------------------------------------------------------------------------------------------
// Seed 004 ("The cat sat"): given embeddings X and W_Q, W_K, W_V, y = x W; then a second example
// with identity projections and a causal mask np.triu(-inf, k=1). The inputs are exact; NumPy
// prints 8 decimals and drops trailing zeros, so the tolerance is half a unit in the 8th decimal,
// 5e-9, plus the library's rounding. (NumPy: no exact value lies closer than 5.9e-10 to a
// rounding boundary, so no check depends on the last bit.)
//   Q = K = X W_Q (W_K = W_Q), V = X W_V
//   scores = Q K^T, e.g. (0,0) = 1 + .25 + .5625 = 1.8125; scaled = scores / sqrt(3)
//   weights = softmax(scaled), output = weights V
// A one-head MultiHeadAttention with these weights, zero biases and W_O = I gives the same output.

constexpr Real seed004_x[3][3] = {{1.0, 0.0, 0.5}, {0.0, 1.0, 0.3}, {1.0, 1.0, 0.2}};
constexpr Real seed004_w_q[3][3] = {{1.0, 0.0, 0.5}, {0.0, 1.0, 0.5}, {0.0, 1.0, 0.5}};
constexpr Real seed004_w_k[3][3] = {{1.0, 0.0, 0.5}, {0.0, 1.0, 0.5}, {0.0, 1.0, 0.5}};
constexpr Real seed004_w_v[3][3] = {{0.5, 1.0, 0.2}, {1.0, 0.5, 0.3}, {1.0, 0.5, 0.1}};
constexpr Real seed004_q[3][3] = {{1., 0.5, 0.75}, {0., 1.3, 0.65}, {1., 1.2, 1.1}};
constexpr Real seed004_k[3][3] = {{1., 0.5, 0.75}, {0., 1.3, 0.65}, {1., 1.2, 1.1}};
constexpr Real seed004_v[3][3] = {{1., 1.25, 0.25}, {1.3, 0.65, 0.33}, {1.7, 1.6, 0.52}};
constexpr Real seed004_scores[3][3] = {
    {1.8125, 1.1375, 2.425}, {1.1375, 2.1125, 2.275}, {2.425, 2.275, 3.65}};
constexpr Real seed004_scaled[3][3] = {{1.04644736L, 0.65673593L, 1.4000744L},
                                       {0.65673593L, 1.21965244L, 1.31347186L},
                                       {1.4000744L, 1.31347186L, 2.10732848L}};
constexpr Real seed004_weights[3][3] = {{0.32242711L, 0.21836449L, 0.4592084L},
                                        {0.21348029L, 0.37482567L, 0.41169404L},
                                        {0.25345618L, 0.23242983L, 0.51411399L}};
constexpr Real seed004_output[3][3] = {{1.38695523L, 1.27970424L, 0.39145543L},
                                       {1.40063353L, 1.16919751L, 0.39114344L},
                                       {1.42960874L, 1.290482L, 0.40740516L}};

// Second example: X = [[1 0 1] [0 1 1] [1 1 0]], W_q = W_k = W_v = I, d_k = 3.
//   scaled = X X^T / sqrt(3): diagonal 2 / sqrt(3) = 1.15470054, off-diagonal 1 / sqrt(3)
//   = 0.57735027; masked above the diagonal.
//   weights row 1: softmax(.57735, 1.15470) = 1 / (1 + e^.57735) = 0.35954252, 0.64045748
//   row 2: e^.57735 = 1.78131, (1, 1, 1.78131) / 3.78131 = 0.26445846, 0.26445846, 0.47108308
constexpr Real seed004_x2[3][3] = {{1., 0., 1.}, {0., 1., 1.}, {1., 1., 0.}};
constexpr Real seed004_masked2[3][3] = {{1.15470054L, minus_inf, minus_inf},
                                        {0.57735027L, 1.15470054L, minus_inf},
                                        {0.57735027L, 0.57735027L, 1.15470054L}};
constexpr Real seed004_weights2[3][3] = {
    {1., 0., 0.}, {0.35954252L, 0.64045748L, 0.}, {0.26445846L, 0.26445846L, 0.47108308L}};
constexpr Real seed004_output2[3][3] = {
    {1., 0., 1.}, {0.35954252L, 0.64045748L, 1.}, {0.73554154L, 0.73554154L, 0.52891692L}};

template <typename T>
class Seed004 : public ::testing::Test {
 protected:
  const Matrix<T> x = table<T>(seed004_x);
  const Matrix<T> w_q = table<T>(seed004_w_q), w_k = table<T>(seed004_w_k),
                  w_v = table<T>(seed004_w_v);
  const attention::RowVector<T> zero = attention::RowVector<T>::Zero(3);
  const long double tol = half_unit_8_decimals + support::tolerance<T>();
};
TYPED_TEST_SUITE(Seed004, DoubleAndLongDouble, support::ScalarNames);

TYPED_TEST(Seed004, Projections) {
  EXPECT_TRUE(support::is_near(attention::project(this->x, this->w_q, this->zero),
                               table<Real>(seed004_q), this->tol));
  EXPECT_TRUE(support::is_near(attention::project(this->x, this->w_k, this->zero),
                               table<Real>(seed004_k), this->tol));
  EXPECT_TRUE(support::is_near(attention::project(this->x, this->w_v, this->zero),
                               table<Real>(seed004_v), this->tol));
}

TYPED_TEST(Seed004, ScoresAndScaledScores) {
  using T = TypeParam;
  const Matrix<T> q = table<T>(seed004_q), k = table<T>(seed004_k);
  EXPECT_TRUE(support::is_near(library_scores(q, k), table<Real>(seed004_scores), this->tol));
  EXPECT_TRUE(support::is_near(ref::scores(ref::to_real(q), ref::to_real(k)),
                               table<Real>(seed004_scores), this->tol));
  EXPECT_TRUE(support::is_near(ref::masked_scores(ref::to_real(q), ref::to_real(k)),
                               table<Real>(seed004_scaled), this->tol));
}

TYPED_TEST(Seed004, AttentionWeights) {
  using T = TypeParam;
  const Matrix<T> q = attention::project(this->x, this->w_q, this->zero);
  const Matrix<T> k = attention::project(this->x, this->w_k, this->zero);
  EXPECT_TRUE(support::is_near(attention::attention_weights(q, k), table<Real>(seed004_weights),
                               this->tol));
}

TYPED_TEST(Seed004, Output) {
  using T = TypeParam;
  const Matrix<T> q = attention::project(this->x, this->w_q, this->zero);
  const Matrix<T> k = attention::project(this->x, this->w_k, this->zero);
  const Matrix<T> v = attention::project(this->x, this->w_v, this->zero);
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(q, k, v),
                               table<Real>(seed004_output), this->tol));
}

TYPED_TEST(Seed004, OneHeadLayerWithIdentityOutputProjection) {
  using T = TypeParam;
  attention::MultiHeadAttention<T> layer(3, 1);
  layer.w_q = this->w_q;
  layer.w_k = this->w_k;
  layer.w_v = this->w_v;
  layer.w_o = Matrix<T>::Identity(3, 3);
  EXPECT_TRUE(support::is_near(layer.forward(this->x), table<Real>(seed004_output), this->tol));
  const auto heads = layer.head_weights(this->x);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_TRUE(support::is_near(heads[0], table<Real>(seed004_weights), this->tol));
}

TYPED_TEST(Seed004, CausalExampleMaskedScores) {
  // masked_scores = scaled_scores + np.triu(np.ones((3, 3)) * -np.inf, k=1)
  using T = TypeParam;
  const Matrix<T> x = table<T>(seed004_x2);
  EXPECT_TRUE(
      support::is_near(ref::masked_scores(ref::to_real(x), ref::to_real(x), ref::Mask::causal()),
                       table<Real>(seed004_masked2), this->tol));
  Matrix<T> scaled = ref::masked_scores(ref::to_real(x), ref::to_real(x)).template cast<T>();
  attention::causal.apply(scaled.data(), scaled.outerStride(), 0, 3, 0, 3);
  EXPECT_TRUE(support::is_near(scaled, table<Real>(seed004_masked2), this->tol));
}

TYPED_TEST(Seed004, CausalExampleWeightsAndOutput) {
  using T = TypeParam;
  const Matrix<T> x = table<T>(seed004_x2);
  const Matrix<T> weights = attention::attention_weights(x, x, attention::causal);
  EXPECT_TRUE(support::is_near(weights, table<Real>(seed004_weights2), this->tol));
  EXPECT_EQ(weights(0, 1), T(0));
  EXPECT_EQ(weights(0, 2), T(0));
  EXPECT_EQ(weights(1, 2), T(0));
  EXPECT_TRUE(support::is_near(attention::scaled_dot_product_attention(x, x, x, attention::causal),
                               table<Real>(seed004_output2), this->tol));
  // The notebook's additive mask, np.triu(-inf, k=1), through attention::bias.
  Matrix<T> triu = Matrix<T>::Zero(3, 3);
  triu(0, 1) = triu(0, 2) = triu(1, 2) = -std::numeric_limits<T>::infinity();
  EXPECT_TRUE(
      support::is_near(attention::scaled_dot_product_attention(x, x, x, attention::bias(triu)),
                       table<Real>(seed004_output2), this->tol));
  // And as a one-head layer with identity projections (W_q = W_k = W_v = W_o = I).
  attention::MultiHeadAttention<T> layer(3, 1);
  layer.w_q = layer.w_k = layer.w_v = layer.w_o = Matrix<T>::Identity(3, 3);
  EXPECT_TRUE(support::is_near(layer.forward(x, attention::causal), table<Real>(seed004_output2),
                               this->tol));
}

}  // namespace
