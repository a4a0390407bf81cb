// SPDX-License-Identifier: MIT
//
// The tiled streaming kernel (kernels/forward.hpp), reached through scaled_dot_product_attention
// for float and double, against an independent long-double reference: awkward sizes around the tile
// and vector widths, masks that empty whole tiles, fully masked rows, the log-sum-exp output, the
// accuracy bound of issue 3 (no worse than 2x the materialising path in the same precision), and
// bitwise determinism across thread counts. This file is also compiled for other instruction sets
// (see tests/CMakeLists.txt), so the SSE2, SSE4 and AVX-512 code paths all run.

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/attention.hpp>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace {

using attention::Index;
namespace ref = support::reference;

template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename Scalar>
class Forward : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Forward, FastScalars, support::ScalarNames);

/// Error bound for outputs of order 1 at the sizes of these tests (S up to ~300 keys, d up to 96):
/// a few times the worst error observed, far below what a wrong tile bound or mask would cause.
template <typename Scalar>
long double forward_tolerance() {
  return std::is_same_v<Scalar, float> ? 4e-6L : 1e-14L;
}

// Sizes straddle the kernel's tiles (block_rows = 48, 64 or 128 queries, block_cols = 24 to 96
// keys depending on the instruction set and scalar) and vector widths (2 to 16 lanes): 1, primes,
// and multiples plus or minus one.
TYPED_TEST(Forward, MatchesReferenceOnAwkwardSizes) {
  using Scalar = TypeParam;
  const Index sizes[][4] = {// L, S, d_k, d_v
                            {1, 1, 1, 1},      {1, 300, 64, 64}, {300, 1, 8, 8},
                            {65, 63, 3, 5},    {64, 64, 72, 72}, {129, 97, 80, 3},
                            {33, 257, 96, 96}, {7, 130, 1, 17},  {200, 50, 128, 128}};
  unsigned seed = 10;
  for (const auto& s : sizes) {
    const auto c = support::random_qkv<Scalar>(s[0], s[1], s[2], s[3], seed += 3);
    const Matrix<Scalar> out = attention::scaled_dot_product_attention(c.q, c.k, c.v);
    const ref::Matrix expected =
        ref::attention(ref::to_real(c.q), ref::to_real(c.k), ref::to_real(c.v), ref::Mask::none());
    EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<Scalar>()))
        << "L=" << s[0] << " S=" << s[1] << " d_k=" << s[2] << " d_v=" << s[3];
  }
}

TYPED_TEST(Forward, CausalMatchesReferenceWhenQueriesAndKeysDiffer) {
  using Scalar = TypeParam;
  const Index sizes[][2] = {{1, 1}, {1, 100}, {100, 1}, {70, 200}, {200, 70}, {129, 129}};
  for (const auto& s : sizes) {
    const auto c = support::random_qkv<Scalar>(s[0], s[1], 24, 40, 77);
    const Matrix<Scalar> out =
        attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::causal);
    const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                                ref::to_real(c.v), ref::Mask::causal());
    EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<Scalar>()))
        << "L=" << s[0] << " S=" << s[1];
  }
}

// Mixed tiles go in bands of rows, each over the keys its rows may see (walk_key_tiles): bands
// whose rows see only the first keys of a tile, none of its keys (sliding windows: a band below
// the window, in the first key tile a query tile reaches, where the products assign rather than
// add), or all of them, with sizes that leave partial tiles and partial bands.
TYPED_TEST(Forward, BandsOfMixedTilesSeeTheirKeysOnly) {
  using Scalar = TypeParam;
  using Window = std::pair<Index, Index>;  // left, right
  const Index sizes[][2] = {{300, 300}, {200, 333}, {333, 200}};
  const Window windows[] = {{5, 0}, {40, 3}, {0, 70}, {attention::unbounded, 0}};
  unsigned seed = 40;
  for (const auto& s : sizes) {
    for (const auto& [left, right] : windows) {
      const auto c = support::random_qkv<Scalar>(s[0], s[1], 24, 40, seed += 2);
      const Matrix<Scalar> out =
          attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::window(left, right));
      const auto side = [](Index x) {
        return x == attention::unbounded ? std::optional<Index>() : std::optional<Index>(x);
      };
      const ref::Matrix expected =
          ref::attention(ref::to_real(c.q), ref::to_real(c.k), ref::to_real(c.v),
                         ref::Mask::window(side(left), side(right)));
      EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<Scalar>()))
          << "L=" << s[0] << " S=" << s[1] << " window " << left << ", " << right;
    }
  }
}

// A keep mask that hides whole tiles (the kernel skips them), hides everything from some rows
// (output exactly 0), and cuts through tiles elsewhere.
TYPED_TEST(Forward, KeepMaskThatEmptiesTilesAndRows) {
  using Scalar = TypeParam;
  const Index num_queries = 150, num_keys = 230;
  const auto c = support::random_qkv<Scalar>(num_queries, num_keys, 20, 12, 5);
  BoolMatrix visible = support::random_keep(num_queries, num_keys, 6, 0.7);
  visible.block(0, 0, 100, 150).setConstant(false);  // several whole tiles
  visible.row(3).setConstant(false);                 // fully masked rows
  visible.row(149).setConstant(false);
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::keep(visible));
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                              ref::to_real(c.v), ref::Mask::keep(visible));
  EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<Scalar>()));
  EXPECT_TRUE((out.row(3).array() == Scalar(0)).all());
  EXPECT_TRUE((out.row(149).array() == Scalar(0)).all());
}

TYPED_TEST(Forward, BiasMaskWithInfiniteBlocksAndScaleOverride) {
  using Scalar = TypeParam;
  const Index num_queries = 90, num_keys = 140;
  const auto c = support::random_qkv<Scalar>(num_queries, num_keys, 16, 16, 8);
  Matrix<Scalar> added = support::random_matrix<Scalar>(num_queries, num_keys, 9);
  added.block(0, 64, 90, 64).setConstant(-std::numeric_limits<Scalar>::infinity());
  added.row(10).setConstant(-std::numeric_limits<Scalar>::infinity());
  const attention::Options options{0.37};
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::bias(added), options);
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                              ref::to_real(c.v), ref::Mask::bias(added), 0.37L);
  EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<Scalar>()));
  EXPECT_TRUE((out.row(10).array() == Scalar(0)).all());
}

// Column views of a wider matrix (a head of a multi-head layer) are read in place; column-major
// inputs are copied once. Both must give the reference's answer.
TYPED_TEST(Forward, ColumnViewsAndColumnMajorInputs) {
  using Scalar = TypeParam;
  const Matrix<Scalar> wide = support::random_matrix<Scalar>(120, 96, 21);
  const auto q = wide.middleCols(0, 32);
  const auto k = wide.middleCols(32, 32);
  const Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic> v = wide.middleCols(64, 32);
  Matrix<Scalar> out_wide = Matrix<Scalar>::Zero(120, 64);
  attention::scaled_dot_product_attention(q, k, v, out_wide.middleCols(16, 32), attention::causal);
  const ref::Matrix expected =
      ref::attention(ref::to_real(q), ref::to_real(k), ref::to_real(v), ref::Mask::causal());
  EXPECT_TRUE(support::is_near(out_wide.middleCols(16, 32), expected, forward_tolerance<Scalar>()));
  EXPECT_TRUE((out_wide.leftCols(16).array() == Scalar(0)).all()) << "wrote outside its view";
  EXPECT_TRUE((out_wide.rightCols(16).array() == Scalar(0)).all()) << "wrote outside its view";
}

// lse_i = log sum_j exp(scale q_i . k_j + mask_ij), -inf for a row that sees no key.
TYPED_TEST(Forward, LogSumExpMatchesReference) {
  using Scalar = TypeParam;
  const Index num_queries = 77, num_keys = 133;
  const auto c = support::random_qkv<Scalar>(num_queries, num_keys, 10, 6, 30);
  BoolMatrix visible = support::random_keep(num_queries, num_keys, 31, 0.5);
  visible.row(0).setConstant(false);
  const auto partial =
      attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, attention::keep(visible));
  const ref::Matrix scores =
      ref::masked_scores(ref::to_real(c.q), ref::to_real(c.k), ref::Mask::keep(visible));
  EXPECT_EQ(partial.lse(0), -std::numeric_limits<Scalar>::infinity());
  for (Index i = 1; i < num_queries; ++i) {
    long double sum = 0;
    for (Index j = 0; j < num_keys; ++j) sum += std::exp(scores(i, j));
    EXPECT_NEAR(static_cast<long double>(partial.lse(i)), std::log(sum),
                forward_tolerance<Scalar>())
        << "row " << i;
  }
}

// Splitting the keys into parts, attending to each part, and merging equals attending to all
// keys, including rows that see keys in one part only and rows that see none at all.
TYPED_TEST(Forward, MergingPartsEqualsTheWhole) {
  using Scalar = TypeParam;
  const Index num_queries = 40, num_keys = 150;
  const auto c = support::random_qkv<Scalar>(num_queries, num_keys, 12, 9, 40);
  BoolMatrix visible = support::random_keep(num_queries, num_keys, 41, 0.6);
  visible.row(5).setConstant(false);  // no key anywhere
  visible.row(6).setConstant(false);
  visible.block(6, 0, 1, 20).setConstant(true);  // keys in the first part only
  const auto whole =
      attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, attention::keep(visible));
  for (const Index num_parts : {2, 3, 7}) {
    std::vector<Index> bounds{0};
    for (Index p = 1; p < num_parts; ++p) bounds.push_back(p * num_keys / num_parts);
    bounds.push_back(num_keys);
    attention::PartialAttention<Scalar> merged;
    for (Index p = 0; p < num_parts; ++p) {
      const Index first = bounds[p], count = bounds[p + 1] - bounds[p];
      const BoolMatrix part_visible = visible.middleCols(first, count);
      auto part = attention::scaled_dot_product_attention_lse(c.q, c.k.middleRows(first, count),
                                                              c.v.middleRows(first, count),
                                                              attention::keep(part_visible));
      merged = p == 0 ? std::move(part) : attention::merge(merged, part);
    }
    EXPECT_TRUE(support::is_near(merged.output, whole.output, forward_tolerance<Scalar>()))
        << num_parts << " parts";
    EXPECT_TRUE(support::is_near(merged.lse, whole.lse, forward_tolerance<Scalar>()))
        << num_parts << " parts";
    EXPECT_TRUE((merged.output.row(5).array() == Scalar(0)).all());
  }
}

// A NaN key reaches exactly the queries that see it, in either merge order: row 0 sees no key of
// part a (lse -inf) and the NaN key of part b, so merge(a, b), merge(b, a) and one call over all
// the keys give NaN there, as in row 2, which sees every key; row 1 sees keys of both parts but not
// the NaN key, and stays finite.
TYPED_TEST(Forward, MergeKeepsANaNKeyInEitherOrder) {
  using Scalar = TypeParam;
  const Index num_queries = 3, num_keys = 10, split = 4;
  auto c = support::random_qkv<Scalar>(num_queries, num_keys, 5, 3, 44);
  c.k(7, 2) = std::numeric_limits<Scalar>::quiet_NaN();  // key 7, in part b
  BoolMatrix visible = BoolMatrix::Constant(num_queries, num_keys, true);
  visible.block(0, 0, 1, split).setConstant(false);  // row 0: nothing in part a
  visible(1, 7) = false;                             // row 1: everything but the NaN key
  const BoolMatrix visible_a = visible.leftCols(split), visible_b = visible.rightCols(6);
  const auto a = attention::scaled_dot_product_attention_lse(
      c.q, c.k.topRows(split), c.v.topRows(split), attention::keep(visible_a));
  const auto b = attention::scaled_dot_product_attention_lse(
      c.q, c.k.bottomRows(6), c.v.bottomRows(6), attention::keep(visible_b));
  ASSERT_EQ(a.lse(0), -std::numeric_limits<Scalar>::infinity());
  ASSERT_TRUE(std::isnan(b.lse(0)));
  const auto whole =
      attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, attention::keep(visible));
  ASSERT_TRUE(std::isnan(whole.lse(0)));
  for (const auto& merged : {attention::merge(a, b), attention::merge(b, a)}) {
    for (const Index i : {0, 2}) {
      EXPECT_TRUE(merged.output.row(i).array().isNaN().all()) << "row " << i << merged.output;
      EXPECT_TRUE(std::isnan(merged.lse(i))) << "row " << i;
    }
    EXPECT_TRUE(merged.output.row(1).allFinite()) << merged.output;
    EXPECT_TRUE(
        support::is_near(merged.output.row(1), whole.output.row(1), forward_tolerance<Scalar>()));
    EXPECT_NEAR(merged.lse(1), whole.lse(1), forward_tolerance<Scalar>());
  }
}

// A part whose weight exp(lse_part - lse_union) underflows to exactly 0 adds nothing, not
// 0 * NaN: its keys have weight exactly 0 in the union too. Either order.
TYPED_TEST(Forward, MergeSkipsAPartOfZeroWeight) {
  using Scalar = TypeParam;
  attention::PartialAttention<Scalar> a{Matrix<Scalar>::Constant(1, 2, Scalar(0.5)),
                                        Eigen::Matrix<Scalar, Eigen::Dynamic, 1>::Constant(1, 0)};
  attention::PartialAttention<Scalar> b{
      Matrix<Scalar>::Constant(1, 2, std::numeric_limits<Scalar>::quiet_NaN()),
      Eigen::Matrix<Scalar, Eigen::Dynamic, 1>::Constant(1, Scalar(-2000))};  // exp(-2000) = 0
  for (const auto& merged : {attention::merge(a, b), attention::merge(b, a)}) {
    EXPECT_EQ(merged.output, a.output);
    EXPECT_EQ(merged.lse(0), Scalar(0));
  }
}

// Values near the type's largest: every output is a convex combination of v's rows, so it is
// finite, although the unnormalised accumulator o = sum_j p_j v_j reaches S max|v|. q = 0 gives
// equal weights 1/S and out = v's common value exactly (up to the rounding of the sum); random
// signs are checked against the long-double reference, relative to max|v|, with the causal mask
// and through the slow p v that a NaN value (behind a zero weight) selects.
TYPED_TEST(Forward, HugeValuesDoNotOverflow) {
  using Scalar = TypeParam;
  const Scalar huge = std::is_same_v<Scalar, float> ? Scalar(1e38) : Scalar(1e307);
  const Index num_keys = std::is_same_v<Scalar, float> ? 8 : 64;
  const Matrix<Scalar> q = Matrix<Scalar>::Zero(3, 4);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(num_keys, 4, 45);
  const Matrix<Scalar> v = Matrix<Scalar>::Constant(num_keys, 5, huge);
  const Matrix<Scalar> out = attention::scaled_dot_product_attention(q, k, v);
  ASSERT_TRUE(out.allFinite()) << out;
  EXPECT_TRUE(
      support::is_near(out / huge, Matrix<Scalar>::Ones(3, 5), forward_tolerance<Scalar>()));
  // The materialising path agrees.
  const Matrix<Scalar> weighted = attention::attention_weights(q, k) * v;
  EXPECT_TRUE(support::is_near(out / huge, weighted / huge, forward_tolerance<Scalar>()));

  const auto c = support::random_qkv<Scalar>(70, 150, 12, 9, 46);
  Matrix<Scalar> big_v = c.v / c.v.cwiseAbs().maxCoeff() * huge;
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                              ref::to_real(big_v), ref::Mask::causal());
  const Matrix<Scalar> big_out =
      attention::scaled_dot_product_attention(c.q, c.k, big_v, attention::causal);
  ASSERT_TRUE(big_out.allFinite());
  const long double unit = static_cast<long double>(huge);
  EXPECT_TRUE(
      support::is_near(ref::to_real(big_out) / unit, expected / unit, forward_tolerance<Scalar>()));
  // A NaN value in key 60, which (causal) queries 60 to 69 see and queries 0 to 59 do not.
  big_v(60, 2) = std::numeric_limits<Scalar>::quiet_NaN();
  const Matrix<Scalar> nan_out =
      attention::scaled_dot_product_attention(c.q, c.k, big_v, attention::causal);
  EXPECT_TRUE(nan_out.topRows(60).allFinite());
  EXPECT_TRUE(nan_out.bottomRows(10).col(2).array().isNaN().all());
  EXPECT_TRUE(support::is_near(ref::to_real(nan_out.topRows(60)) / unit,
                               ref::rows(expected, 0, 60) / unit, forward_tolerance<Scalar>()));
}

/// Max |out - reference| over a sample of query rows, the reference computed per row in long
/// double with plain loops (rows are independent, so sampling keeps N = 4096 affordable).
template <typename Scalar>
long double sampled_error(const Matrix<Scalar>& out, const Matrix<Scalar>& q,
                          const Matrix<Scalar>& k, const Matrix<Scalar>& v, bool causal) {
  const Index num_keys = k.rows(), d = q.cols();
  const long double scale = 1.0L / std::sqrt(static_cast<long double>(d));
  long double worst = 0;
  std::vector<long double> p(static_cast<std::size_t>(num_keys));
  for (Index i = 0; i < q.rows(); i += std::max<Index>(1, q.rows() / 48)) {
    const Index visible = causal ? std::min(i + 1, num_keys) : num_keys;
    long double m = -std::numeric_limits<long double>::infinity();
    for (Index j = 0; j < visible; ++j) {
      long double s = 0;
      for (Index c = 0; c < d; ++c) s += static_cast<long double>(q(i, c)) * k(j, c);
      p[j] = scale * s;
      m = std::max(m, p[j]);
    }
    long double sum = 0;
    for (Index j = 0; j < visible; ++j) sum += (p[j] = std::exp(p[j] - m));
    for (Index c = 0; c < v.cols(); ++c) {
      long double o = 0;
      for (Index j = 0; j < visible; ++j) o += p[j] * v(j, c);
      worst = std::max(worst, std::fabs(o / sum - out(i, c)));
    }
  }
  return worst;
}

// Issue 3's accuracy bound: the kernel's error is at most twice the materialising path's, in the
// same precision, for long sequences and for scores of magnitude ~1e3 (inputs scaled up). A small
// absolute floor covers cases where both errors are at the rounding level of the output itself.
TYPED_TEST(Forward, NoLessAccurateThanTheMaterialisingPath) {
  using Scalar = TypeParam;
  struct Setting {
    Index n, d;
    bool causal;
    Scalar input_scale;
  };
  // input_scale 6: q.k / sqrt(d) ~ 36 * N(0, 1) per score; 18: ~ 300, peaks near 1e3.
  const Setting settings[] = {{1024, 64, false, 1},
                              {1024, 128, true, 1},
                              {4096, 64, true, 1},
                              {1024, 128, false, 6},
                              {1024, 64, true, 18}};
  const long double floor = std::numeric_limits<Scalar>::epsilon();
  for (const auto& s : settings) {
    const auto c = support::random_qkv<Scalar>(s.n, s.n, s.d, s.d, 50);
    const Matrix<Scalar> q = c.q * s.input_scale, k = c.k * s.input_scale;
    const attention::detail::kernels::ScoreRules<Scalar> rules{Scalar(1) / std::sqrt(Scalar(s.d))};
    Matrix<Scalar> fast(s.n, s.d), naive(s.n, s.d);
    if (s.causal) {
      attention::scaled_dot_product_attention(q, k, c.v, fast, attention::causal);
      attention::detail::materialized_attention<Scalar>(q, k, c.v, naive, attention::causal, rules);
    } else {
      attention::scaled_dot_product_attention(q, k, c.v, fast);
      attention::detail::materialized_attention<Scalar>(q, k, c.v, naive, attention::NoMask{},
                                                        rules);
    }
    const long double fast_error = sampled_error(fast, q, k, c.v, s.causal);
    const long double naive_error = sampled_error(naive, q, k, c.v, s.causal);
    EXPECT_LE(fast_error, 2 * naive_error + floor)
        << "N=" << s.n << " d=" << s.d << " causal=" << s.causal << " x" << s.input_scale
        << ": kernel " << static_cast<double>(fast_error) << ", materialising "
        << static_cast<double>(naive_error);
    // Scores scale with input_scale^2, and so does their rounding error, which exp() turns into a
    // relative error of the weights: the absolute bound grows accordingly.
    EXPECT_LT(fast_error,
              200 * std::numeric_limits<Scalar>::epsilon() * s.input_scale * s.input_scale);
  }
}

// Keys enough that one head's packed K and V exceed prefetch_panels_above, where the float kernel
// on the AVX-512 path asks each key block's panels into L2 ahead of use (Geometry::
// prefetches_panels), with a last key block of 8 keys: the same accuracy bound as above against
// the materialising path.
TYPED_TEST(Forward, LongKeyRunMatchesTheMaterialisingPath) {
  using Scalar = TypeParam;
  const Index queries = 70, keys = 8200, d = 128;
  ASSERT_GT(double(keys) * (d + d) * sizeof(float),
            attention::detail::kernels::prefetch_panels_above);
  const auto c = support::random_qkv<Scalar>(queries, keys, d, d, 64);
  const attention::detail::kernels::ScoreRules<Scalar> rules{Scalar(1) / std::sqrt(Scalar(d))};
  Matrix<Scalar> fast(queries, d), naive(queries, d);
  attention::scaled_dot_product_attention(c.q, c.k, c.v, fast);
  attention::detail::materialized_attention<Scalar>(c.q, c.k, c.v, naive, attention::NoMask{},
                                                    rules);
  const long double fast_error = sampled_error(fast, c.q, c.k, c.v, false);
  const long double naive_error = sampled_error(naive, c.q, c.k, c.v, false);
  EXPECT_LE(fast_error, 2 * naive_error + std::numeric_limits<Scalar>::epsilon())
      << "kernel " << static_cast<double>(fast_error) << ", materialising "
      << static_cast<double>(naive_error);
}

#if defined(_OPENMP)
// Every query row is computed with the same instructions whatever the thread count (by one thread,
// in a whole query tile or, when threads share a step's last tiles, in a half: ForwardJobs), so the
// results must agree to the bit, for single-head attention and for multi-head forward. The
// calls are large enough to be shared by 3 threads (scheduling.hpp, min_multiply_adds_per_thread):
// 300 x 280 x (48 + 48) and 4 x 300 x 300 x (16 + 16) multiply-adds. Those threads pack private
// copies of K and V (ForwardJobs::panel_copies); a call of 4200 keys at d = 128 has panels too
// large for that, which the threads pack together and share.
TYPED_TEST(Forward, BitwiseIdenticalForAnyThreadCount) {
  using Scalar = TypeParam;
  const auto c = support::random_qkv<Scalar>(300, 280, 48, 48, 60);
  const auto wide = support::random_qkv<Scalar>(70, 4200, 128, 128, 63);
  ASSERT_GT(4200.0 * (128 + 128) * sizeof(Scalar),
            attention::detail::kernels::private_panels_budget);
  attention::MultiHeadAttention<Scalar> layer(64, 4);
  layer.reset_parameters(61);
  const Matrix<Scalar> x = support::random_matrix<Scalar>(300, 64, 62);
  ASSERT_GE(300.0 * 280 * 96, 3 * attention::detail::kernels::min_multiply_adds_per_thread);
  ASSERT_GE(4 * 300.0 * 300 * 32, 3 * attention::detail::kernels::min_multiply_adds_per_thread);
  const int saved = omp_get_max_threads();
  std::vector<Matrix<Scalar>> single, causal_single, multi, shared_panels;
  for (const int threads : {1, 2, 3}) {
    omp_set_num_threads(threads);
    single.push_back(attention::scaled_dot_product_attention(c.q, c.k, c.v));
    shared_panels.push_back(attention::scaled_dot_product_attention(wide.q, wide.k, wide.v));
    causal_single.push_back(
        attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::causal));
    multi.push_back(layer.forward(x, attention::causal));
  }
  omp_set_num_threads(saved);
  for (std::size_t t = 1; t < single.size(); ++t) {
    EXPECT_TRUE(single[t] == single[0]) << t + 1 << " threads";
    EXPECT_TRUE(causal_single[t] == causal_single[0]) << t + 1 << " threads";
    EXPECT_TRUE(multi[t] == multi[0]) << t + 1 << " threads";
    EXPECT_TRUE(shared_panels[t] == shared_panels[0]) << t + 1 << " threads";
  }
}
#endif

}  // namespace
