// SPDX-License-Identifier: MIT
//
// The split-key decode path, kernels/decode.hpp (decode_attention; taken by
// scaled_dot_product_attention for at most decode_max_queries queries against at least
// 2 * decode_chunk keys): against the long-double reference (awkward widths, every mask kind,
// chunks that a mask hides entirely, rows that see no key, the log-sum-exp), bitwise identical
// results for 1, 2 and 3 threads, non-finite values behind zero weights, and grouped-query heads
// (several query heads reading one K/V head) against each head computed alone.

#include <gtest/gtest.h>

#include <algorithm>
#include <attention/attention.hpp>
#include <attention/isa.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

namespace {

using attention::Index;
namespace ref = support::reference;
namespace kernels = attention::detail::kernels;

template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

template <typename Scalar>
class Decode : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(Decode, FastScalars, support::ScalarNames);

/// Error bound for outputs of order 1 with up to ~2100 keys and d up to 128: the dot products
/// (d terms), the chunk sums (256 terms) and the merge (S / 256 terms) each add a few ulps, so
/// ~100 epsilon (1.2e-5 float, 2.2e-14 double) with room to spare; a wrong chunk boundary, mask
/// or merge weight makes errors of order 1e-2 or more.
template <typename Scalar>
long double decode_tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-5L : 2e-14L;
}

// When the decode path is taken: scheduling_test.cpp, DecodePathIsTakenForFewQueriesAndManyKeys.

// Widths around the SIMD width (d = 37 and 72 leave a scalar tail with AVX-512), a last chunk
// that is short or a single key, L from 1 to decode_max_queries.
TYPED_TEST(Decode, MatchesReferenceOnAwkwardSizes) {
  using Scalar = TypeParam;
  const Index sizes[][4] = {// L, S, d_k, d_v
                            {1, 512, 128, 128}, {1, 513, 64, 64},    {3, 1000, 72, 40},
                            {16, 777, 37, 37},  {2, 2049, 128, 128}, {1, 600, 1, 17},
                            {5, 530, 16, 3}};
  unsigned seed = 30;
  for (const auto& s : sizes) {
    ASSERT_TRUE(kernels::use_decode_path(s[0], s[1]));
    const auto c = support::random_qkv<Scalar>(s[0], s[1], s[2], s[3], seed += 3);
    const auto part = attention::scaled_dot_product_attention_lse(c.q, c.k, c.v);
    const ref::Matrix q = ref::to_real(c.q), k = ref::to_real(c.k), v = ref::to_real(c.v);
    EXPECT_TRUE(support::is_near(part.output, ref::attention(q, k, v), decode_tolerance<Scalar>()))
        << "L=" << s[0] << " S=" << s[1] << " d_k=" << s[2] << " d_v=" << s[3];
    // lse = log sum_j exp(s_j), written out from the reference's scores.
    const ref::Matrix scores = ref::masked_scores(q, k);
    ref::Matrix lse(s[0], 1);
    for (Index i = 0; i < s[0]; ++i) {
      // Every key is visible, so the max term contributes exp(0) = 1 and sum >= 1.
      long double m = scores(i, 0);
      for (Index j = 1; j < s[1]; ++j) m = std::max(m, scores(i, j));
      long double sum = std::exp(scores(i, 0) - m);
      for (Index j = 1; j < s[1]; ++j) sum += std::exp(scores(i, j) - m);
      lse(i, 0) = m + std::log(sum);
    }
    EXPECT_TRUE(support::is_near(part.lse, lse, decode_tolerance<Scalar>()));
  }
}

// Many chunks: the merge takes a block of 4 stacked rows at a time while the thread's score buffer
// (one head: 4 padded rows x 256 keys) holds 4 rows' coefficients, fewer rows at a time beyond
// 256 chunks (3 rows of 313 chunks here), and each row alone beyond 1024 chunks. d = 2 keeps the
// long-double reference cheap; the merge's num_chunks terms allow up to ~1e-4 in float.
TYPED_TEST(Decode, ManyChunksMergeInBlocksOfRowsOrRowByRow) {
  using Scalar = TypeParam;
  const Index sizes[][2] = {{3, 313 * kernels::decode_chunk - 7},  // L, S
                            {2, 1025 * kernels::decode_chunk + 3}};
  const long double tolerance = std::is_same_v<Scalar, float> ? 1e-4L : 2e-13L;
  unsigned seed = 90;
  for (const auto& s : sizes) {
    ASSERT_TRUE(kernels::use_decode_path(s[0], s[1]));
    const auto c = support::random_qkv<Scalar>(s[0], s[1], 2, 2, seed += 3);
    const Matrix<Scalar> out = attention::scaled_dot_product_attention(c.q, c.k, c.v);
    const ref::Matrix expected =
        ref::attention(ref::to_real(c.q), ref::to_real(c.k), ref::to_real(c.v));
    EXPECT_TRUE(support::is_near(out, expected, tolerance)) << "L=" << s[0] << " S=" << s[1];
  }
}

// Top-left causal with L = 3: query i sees keys 0..i, so every chunk but the first is hidden.
TYPED_TEST(Decode, CausalHidesAllButTheFirstChunk) {
  using Scalar = TypeParam;
  const auto c = support::random_qkv<Scalar>(3, 1500, 32, 24, 7);
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::causal);
  const ref::Matrix expected =
      ref::attention(ref::to_real(c.q), ref::to_real(c.k), ref::to_real(c.v), ref::Mask::causal());
  EXPECT_TRUE(support::is_near(out, expected, decode_tolerance<Scalar>()));
  // Query 0 sees key 0 alone: its output is v_0 exactly.
  EXPECT_TRUE(support::is_near(out.row(0), c.v.row(0), 0));
}

// A keep mask that hides whole chunks from every row, hides everything from one row (output
// exactly 0, lse -inf), and leaves a single key visible to another.
TYPED_TEST(Decode, KeepMaskThatEmptiesChunksAndRows) {
  using Scalar = TypeParam;
  const Index L = 4, S = 1300;
  const auto c = support::random_qkv<Scalar>(L, S, 48, 40, 11);
  BoolMatrix visible = support::random_keep(L, S, 12, 0.6);
  visible.middleCols(256, 512).setConstant(false);  // chunks 1 and 2
  visible.row(1).setConstant(false);
  visible.row(2).setConstant(false);
  visible(2, 1299) = true;
  const auto part =
      attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, attention::keep(visible));
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                              ref::to_real(c.v), ref::Mask::keep(visible));
  EXPECT_TRUE(support::is_near(part.output, expected, decode_tolerance<Scalar>()));
  EXPECT_TRUE((part.output.row(1).array() == Scalar(0)).all());
  EXPECT_EQ(part.lse(1), -std::numeric_limits<Scalar>::infinity());
  EXPECT_TRUE(support::is_near(part.output.row(2), c.v.row(1299), 0));
}

// A bias (ALiBi-like slope plus -inf blocks) and a scale above 1 (the scores are scaled after the
// product rather than q before it).
TYPED_TEST(Decode, BiasMaskAndLargeScale) {
  using Scalar = TypeParam;
  const Index L = 2, S = 900;
  const auto c = support::random_qkv<Scalar>(L, S, 16, 16, 13);
  Matrix<Scalar> added(L, S);
  for (Index i = 0; i < L; ++i) {
    for (Index j = 0; j < S; ++j) added(i, j) = Scalar(-0.01) * static_cast<Scalar>(S - 1 - j);
  }
  added.middleCols(0, 300).setConstant(-std::numeric_limits<Scalar>::infinity());
  const attention::Options options{1.7};
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::bias(added), options);
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                              ref::to_real(c.v), ref::Mask::bias(added), 1.7L);
  EXPECT_TRUE(support::is_near(out, expected, decode_tolerance<Scalar>()));
}

// The same call with 1, 2 and 3 threads gives the same bits (chunks are fixed by S and merged in
// chunk order).
TYPED_TEST(Decode, BitwiseIdenticalForAnyThreadCount) {
  using Scalar = TypeParam;
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP";
#endif
  const auto c = support::random_qkv<Scalar>(2, 5000, 128, 128, 17);
  const BoolMatrix visible = support::random_keep(2, 5000, 18, 0.8);
  std::vector<Matrix<Scalar>> outs;
  for (const int threads : {1, 2, 3}) {
    support::with_threads(threads, [&] {
      outs.push_back(attention::scaled_dot_product_attention(c.q, c.k, c.v));
      outs.push_back(
          attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::keep(visible)));
    });
  }
  for (std::size_t i = 2; i < outs.size(); ++i) {
    EXPECT_TRUE(support::bitwise_equal(outs[i], outs[i % 2])) << "call " << i;
  }
}

// A NaN or inf value behind a zero weight (a masked key) adds nothing; a NaN value that a row
// sees makes that row NaN and no other.
TYPED_TEST(Decode, NonFiniteValuesReachOnlyRowsThatWeighThem) {
  using Scalar = TypeParam;
  const Index L = 2, S = 800;
  auto c = support::random_qkv<Scalar>(L, S, 8, 8, 19);
  c.v(700, 3) = std::numeric_limits<Scalar>::quiet_NaN();
  c.v(10, 0) = std::numeric_limits<Scalar>::infinity();
  BoolMatrix visible = BoolMatrix::Constant(L, S, true);
  visible(0, 700) = false;
  visible(0, 10) = false;
  visible(1, 10) = false;
  const Matrix<Scalar> out =
      attention::scaled_dot_product_attention(c.q, c.k, c.v, attention::keep(visible));
  EXPECT_TRUE(out.row(0).allFinite());
  EXPECT_TRUE(std::isnan(out(1, 3)));
  Matrix<Scalar> clean_v = c.v;
  clean_v(700, 3) = 0;
  clean_v(10, 0) = 0;
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(c.k),
                                              ref::to_real(clean_v), ref::Mask::keep(visible));
  EXPECT_TRUE(support::is_near(out.row(0), ref::rows(expected, 0, 1), decode_tolerance<Scalar>()));
}

// Values near the type's largest: the chunks' partial outputs and their merge must not overflow
// where the result, a convex combination of v's rows, is finite. q = 0 gives equal weights and
// out = v's common value (L = 2, S = 600: three chunks; 1e37 overflows a whole chunk's unnormalised
// sum, 1e36 only the merged one); random signs against the long-double reference, relative to
// max|v|.
TYPED_TEST(Decode, HugeValuesDoNotOverflow) {
  using Scalar = TypeParam;
  const Index L = 2, S = 600;
  const Matrix<Scalar> q = Matrix<Scalar>::Zero(L, 8);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(S, 8, 21);
  const std::vector<Scalar> values = std::is_same_v<Scalar, float>
                                         ? std::vector<Scalar>{Scalar(1e36), Scalar(1e37)}
                                         : std::vector<Scalar>{Scalar(1e305), Scalar(1e307)};
  for (const Scalar huge : values) {
    const Matrix<Scalar> v = Matrix<Scalar>::Constant(S, 6, huge);
    const Matrix<Scalar> out = attention::scaled_dot_product_attention(q, k, v);
    ASSERT_TRUE(out.allFinite()) << huge;
    EXPECT_TRUE(
        support::is_near(out / huge, Matrix<Scalar>::Ones(L, 6), decode_tolerance<Scalar>()))
        << huge;
  }
  const Scalar huge = values.back();
  const auto c = support::random_qkv<Scalar>(3, 700, 8, 6, 22);
  const Matrix<Scalar> big_v = c.v / c.v.cwiseAbs().maxCoeff() * huge;
  const Matrix<Scalar> out = attention::scaled_dot_product_attention(c.q, c.k, big_v);
  ASSERT_TRUE(out.allFinite());
  const long double unit = static_cast<long double>(huge);
  EXPECT_TRUE(support::is_near(
      ref::to_real(out) / unit,
      ref::attention(ref::to_real(c.q), ref::to_real(c.k), ref::to_real(big_v)) / unit,
      decode_tolerance<Scalar>()));
}

// A NaN key reaches exactly the queries that see it, also across chunks: query 0 sees no key of
// the first two chunks and the NaN key in the third (the merge must not drop it), query 1 sees
// every key but the NaN one.
TYPED_TEST(Decode, NaNKeyInALaterChunkReachesTheQueriesThatSeeIt) {
  using Scalar = TypeParam;
  const Index L = 2, S = 600;
  auto c = support::random_qkv<Scalar>(L, S, 8, 4, 23);
  c.k(550, 1) = std::numeric_limits<Scalar>::quiet_NaN();
  BoolMatrix visible = BoolMatrix::Constant(L, S, true);
  visible.block(0, 0, 1, 512).setConstant(false);
  visible(1, 550) = false;
  const auto out =
      attention::scaled_dot_product_attention_lse(c.q, c.k, c.v, attention::keep(visible));
  EXPECT_TRUE(out.output.row(0).array().isNaN().all()) << out.output;
  EXPECT_TRUE(std::isnan(out.lse(0)));
  EXPECT_TRUE(out.output.row(1).allFinite()) << out.output;
  Matrix<Scalar> clean_k = c.k;
  clean_k(550, 1) = 0;
  const ref::Matrix expected = ref::attention(ref::to_real(c.q), ref::to_real(clean_k),
                                              ref::to_real(c.v), ref::Mask::keep(visible));
  EXPECT_TRUE(
      support::is_near(out.output.row(1), ref::rows(expected, 1, 1), decode_tolerance<Scalar>()));
}

// Grouped-query decode through the kernel's interface: 8 query heads, 2 K/V heads (heads_per_kv
// = 4), one query each, K and V of the group read by one job. Each head must equal the reference
// on its own K/V head; and the grouped call must give the same bits as each head alone.
TYPED_TEST(Decode, GroupedQueryHeadsShareOneKeyValueHead) {
  using Scalar = TypeParam;
  const Index num_heads = 8, heads_per_kv = 4, head_dim = 64, L = 1, S = 1100;
  const Index num_kv = num_heads / heads_per_kv;
  const Matrix<Scalar> q = support::random_matrix<Scalar>(L, num_heads * head_dim, 21);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(S, num_kv * head_dim, 22);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(S, num_kv * head_dim, 23);
  Matrix<Scalar> out(L, num_heads * head_dim);
  std::vector<kernels::HeadOperands<Scalar>> heads;
  for (Index h = 0; h < num_heads; ++h) {
    const Index g = h / heads_per_kv;
    heads.push_back({q.data() + h * head_dim, q.outerStride(), k.data() + g * head_dim,
                     k.outerStride(), v.data() + g * head_dim, v.outerStride(),
                     out.data() + h * head_dim, out.outerStride(), nullptr});
  }
  kernels::CallWorkspace<Scalar> workspace;
  const kernels::ScoreRules<Scalar> rules{
      static_cast<Scalar>(1 / std::sqrt(static_cast<double>(head_dim)))};
  kernels::decode_attention(heads.data(), num_heads, L, S, head_dim, head_dim, rules,
                            attention::NoMask{}, workspace, heads_per_kv);
  for (Index h = 0; h < num_heads; ++h) {
    const Index g = h / heads_per_kv;
    const ref::Matrix expected = ref::attention(ref::to_real(q.middleCols(h * head_dim, head_dim)),
                                                ref::to_real(k.middleCols(g * head_dim, head_dim)),
                                                ref::to_real(v.middleCols(g * head_dim, head_dim)));
    EXPECT_TRUE(support::is_near(out.middleCols(h * head_dim, head_dim), expected,
                                 decode_tolerance<Scalar>()))
        << "head " << h;
    const Matrix<Scalar> alone = attention::scaled_dot_product_attention(
        q.middleCols(h * head_dim, head_dim), k.middleCols(g * head_dim, head_dim),
        v.middleCols(g * head_dim, head_dim));
    EXPECT_TRUE(
        support::bitwise_equal(Matrix<Scalar>(out.middleCols(h * head_dim, head_dim)), alone))
        << "head " << h;
  }
}

/// Several query heads laid out as a KV cache is: q and out L x (num_heads * d), k and v
/// S x (num_kv_heads * d) with head g's keys in columns [g d, (g + 1) d), so that the K/V heads of
/// a token sit side by side in one row. Runs decode_attention on them with `threads` threads.
template <typename Scalar>
struct CacheLayoutCall {
  Index num_heads, heads_per_kv, num_queries, num_keys, d;
  Matrix<Scalar> q, k, v, out, lse;

  CacheLayoutCall(Index num_heads_, Index heads_per_kv_, Index num_queries_, Index num_keys_,
                  Index d_, unsigned seed)
      : num_heads(num_heads_),
        heads_per_kv(heads_per_kv_),
        num_queries(num_queries_),
        num_keys(num_keys_),
        d(d_),
        q(support::random_matrix<Scalar>(num_queries_, num_heads_ * d_, seed)),
        k(support::random_matrix<Scalar>(num_keys_, num_heads_ / heads_per_kv_ * d_, seed + 1)),
        v(support::random_matrix<Scalar>(num_keys_, num_heads_ / heads_per_kv_ * d_, seed + 2)),
        out(num_queries_, num_heads_ * d_),
        lse(num_heads_, num_queries_) {}

  template <typename Mask = attention::NoMask>
  void run(int threads, const Mask& mask = {}) {
    std::vector<kernels::HeadOperands<Scalar>> heads;
    for (Index h = 0; h < num_heads; ++h) {
      const Index g = h / heads_per_kv;
      heads.push_back({q.data() + h * d, q.outerStride(), k.data() + g * d, k.outerStride(),
                       v.data() + g * d, v.outerStride(), out.data() + h * d, out.outerStride(),
                       lse.data() + h * num_queries});
    }
    kernels::CallWorkspace<Scalar> workspace;
    const kernels::ScoreRules<Scalar> rules{
        static_cast<Scalar>(1 / std::sqrt(static_cast<double>(d)))};
    support::with_threads(threads, [&] {
      kernels::decode_attention(heads.data(), num_heads, num_queries, num_keys, d, d, rules, mask,
                                workspace, heads_per_kv);
    });
  }

  /// Head h's output and log-sum-exp against the long-double reference on its K/V head's columns.
  ::testing::AssertionResult matches_reference(Index h, const ref::Mask& mask) const {
    const Index g = h / heads_per_kv;
    const ref::Matrix qh = ref::to_real(q.middleCols(h * d, d));
    const ref::Matrix kg = ref::to_real(k.middleCols(g * d, d));
    const ref::Matrix vg = ref::to_real(v.middleCols(g * d, d));
    if (!support::is_near(out.middleCols(h * d, d), ref::attention(qh, kg, vg, mask),
                          decode_tolerance<Scalar>())) {
      return ::testing::AssertionFailure() << "output of head " << h;
    }
    const ref::Matrix expected_lse = ref::row_logsumexp(ref::masked_scores(qh, kg, mask));
    const Matrix<Scalar> lse_h = lse.row(h).transpose();
    for (Index i = 0; i < num_queries; ++i) {
      const long double e = expected_lse(i, 0);
      const long double a = lse_h(i, 0);
      const long double tol = decode_tolerance<Scalar>() * (1 + std::abs(e));
      if (std::isinf(e) ? a != e : std::abs(a - e) > tol) {
        return ::testing::AssertionFailure()
               << "lse of head " << h << ", query " << i << ": " << a << " against " << e;
      }
    }
    return ::testing::AssertionSuccess();
  }
};

// One job reads a chunk of every K/V head from rows that hold all heads side by side. Groups of
// 1, 2 and 4 query heads per K/V head, L of 1 and 3 (stacked rows not a multiple of 4), S not a
// multiple of the chunk or of the step within it, a keep mask that hides chunk 1 from every row
// and leaves one row a single key: every head against the reference on its own K/V head.
TYPED_TEST(Decode, AllKeyValueHeadsOfAChunkInOneJob) {
  using Scalar = TypeParam;
  constexpr Index chunk = kernels::decode_chunk;
  unsigned seed = 40;
  for (const Index heads_per_kv : {1, 2, 4}) {
    for (const Index L : {1, 3}) {
      for (const Index S : {Index{1000}, 4 * chunk + 9}) {
        CacheLayoutCall<Scalar> call(8, heads_per_kv, L, S, 40, seed += 3);
        BoolMatrix visible = support::random_keep(L, S, seed, 0.7);
        visible.middleCols(chunk, chunk).setConstant(false);
        visible.row(L - 1).setConstant(false);
        visible(L - 1, S - 1) = true;
        for (const int threads : {1, 2}) {
          call.run(threads, attention::keep(visible));
          for (Index h = 0; h < call.num_heads; ++h) {
            EXPECT_TRUE(call.matches_reference(h, ref::Mask::keep(visible)))
                << "heads_per_kv=" << heads_per_kv << " L=" << L << " S=" << S
                << " threads=" << threads;
            // The last row sees key S - 1 alone: its output is that value row exactly.
            const Index g = h / heads_per_kv;
            EXPECT_TRUE(support::is_near(call.out.block(L - 1, h * call.d, 1, call.d),
                                         call.v.block(S - 1, g * call.d, 1, call.d), 0));
          }
        }
      }
    }
  }
}

// Unmasked and causal (lower-right, as a prompt chunk over a cache) calls of the cache layout
// against the reference, with MQA's single K/V head for 8 query heads.
TYPED_TEST(Decode, CacheLayoutUnmaskedCausalAndOneKeyValueHead) {
  using Scalar = TypeParam;
  unsigned seed = 60;
  for (const Index heads_per_kv : {2, 8}) {
    CacheLayoutCall<Scalar> call(8, heads_per_kv, 5, 1531, 64, seed += 3);
    call.run(2);
    for (Index h = 0; h < call.num_heads; ++h) {
      EXPECT_TRUE(call.matches_reference(h, ref::Mask::none())) << "heads_per_kv=" << heads_per_kv;
    }
    call.run(2, attention::causal_lower_right);
    for (Index h = 0; h < call.num_heads; ++h) {
      EXPECT_TRUE(call.matches_reference(h, ref::Mask::causal_lower_right()))
          << "heads_per_kv=" << heads_per_kv;
    }
  }
}

// The jobs hold a chunk of a slice of the K/V heads, the slices cut by the thread count when there
// are few chunks (600 keys: 3 chunks); a part must come out the same whatever job holds it. 1, 2
// and 3 threads, few and many chunks, with and without a mask: the same bits.
TYPED_TEST(Decode, CacheLayoutBitwiseIdenticalForAnyThreadCount) {
#if !defined(_OPENMP)
  GTEST_SKIP() << "built without OpenMP";
#endif
  using Scalar = TypeParam;
  for (const Index S : {600, 2100}) {
    CacheLayoutCall<Scalar> call(16, 2, 2, S, 128, 80);
    const BoolMatrix visible = support::random_keep(2, S, 81, 0.8);
    std::vector<Matrix<Scalar>> outs, lses;
    for (const int threads : {1, 2, 3}) {
      call.run(threads);
      outs.push_back(call.out);
      lses.push_back(call.lse);
      call.run(threads, attention::keep(visible));
      outs.push_back(call.out);
      lses.push_back(call.lse);
    }
    for (std::size_t i = 2; i < outs.size(); ++i) {
      EXPECT_TRUE(support::bitwise_equal(outs[i], outs[i % 2])) << "S=" << S << " call " << i;
      EXPECT_TRUE(support::bitwise_equal(lses[i], lses[i % 2])) << "S=" << S << " call " << i;
    }
  }
}

// Non-finite values in one K/V head of the cache layout: behind zero weights they add nothing;
// a NaN value that a row weighs makes that row NaN in the heads reading that K/V head only.
TYPED_TEST(Decode, CacheLayoutNonFiniteValuesStayInTheirHeads) {
  using Scalar = TypeParam;
  constexpr Scalar nan = std::numeric_limits<Scalar>::quiet_NaN();
  constexpr Scalar inf = std::numeric_limits<Scalar>::infinity();
  const Index L = 2, S = 900, d = 32;
  CacheLayoutCall<Scalar> call(4, 2, L, S, d, 90);
  call.v(500, 1 * d + 3) = nan;  // K/V head 1, a key only query 1 sees
  call.v(20, 0 * d + 7) = inf;   // K/V head 0, a key no query sees
  BoolMatrix visible = BoolMatrix::Constant(L, S, true);
  visible(0, 500) = false;
  visible.col(20).setConstant(false);
  call.run(2, attention::keep(visible));
  for (Index h = 0; h < 4; ++h) {
    const bool reads_nan_head = h / 2 == 1;
    EXPECT_TRUE(call.out.block(0, h * d, 1, d).allFinite()) << "head " << h;
    EXPECT_EQ(call.out.block(1, h * d, 1, d).allFinite(), !reads_nan_head) << "head " << h;
  }
  Matrix<Scalar> clean_v = call.v;
  clean_v(500, 1 * d + 3) = 0;
  clean_v(20, 0 * d + 7) = 0;
  for (Index h = 0; h < 4; ++h) {
    const Index g = h / 2;
    const ref::Matrix expected = ref::attention(
        ref::to_real(call.q.middleCols(h * d, d)), ref::to_real(call.k.middleCols(g * d, d)),
        ref::to_real(clean_v.middleCols(g * d, d)), ref::Mask::keep(visible));
    const Index finite_rows = h / 2 == 1 ? 1 : 2;
    EXPECT_TRUE(support::is_near(call.out.block(0, h * d, finite_rows, d),
                                 ref::rows(expected, 0, finite_rows), decode_tolerance<Scalar>()))
        << "head " << h;
  }
}

// --- Integer scores over int8 keys (decode_kernels.hpp, "Integer scores") -----------------------

/// The written formula of an integer score: the exact sum of q_t k_t in blocks of
/// int16_dot_block columns (in 64-bit integers here, each block's checked to fit an int32),
/// each block converted to float, the blocks added in order, then times (q_scale k_scale).
::testing::AssertionResult integer_score(const std::int16_t* q, const std::int8_t* k, Index d,
                                         float q_scale, float k_scale, float& score) {
  float total = 0;
  for (Index t0 = 0; t0 < d; t0 += kernels::int16_dot_block) {
    long long block = 0;
    for (Index t = t0; t < std::min(d, t0 + kernels::int16_dot_block); ++t) {
      block += static_cast<long long>(q[t]) * static_cast<long long>(k[t]);
    }
    if (block > std::numeric_limits<std::int32_t>::max() ||
        block < std::numeric_limits<std::int32_t>::min()) {
      return ::testing::AssertionFailure() << "block sum " << block << " beyond int32";
    }
    total = t0 == 0 ? static_cast<float>(block) : total + static_cast<float>(block);
  }
  score = total * (q_scale * k_scale);
  return ::testing::AssertionSuccess();
}

/// 8 query rows (int16 in [-32767, 32767], two rows at the extremes: every entry 32767, and
/// entries +-32767 with the signs of the keys' first row) against 7 int8 keys (in [-127, 127], the
/// first every entry 127 or -127) of d columns, one scale per key and head (the head's columns
/// from 3 d in a row of 5 heads, in groups of d: scale 3 of the key's 5), through `scores` (a
/// path's decode_scores_int16, taken as a plain function pointer so that every path is called the
/// same way): the formula above, bit for bit.
template <typename Scores>
::testing::AssertionResult integer_scores_match_formula(Scores scores, Index d) {
  const Index rows = 8, cols = 7,
              ldq = (d + kernels::int16_query_pad - 1) / kernels::int16_query_pad *
                    kernels::int16_query_pad;
  const Index ldk = 5 * d + 3, column = 3 * d, lds = 11;
  std::mt19937 engine{static_cast<unsigned>(d)};
  std::uniform_int_distribution<int> q_entry(-32767, 32767), k_entry(-127, 127);
  std::uniform_real_distribution<float> scale(0.001f, 2.0f);
  std::vector<std::int8_t> k(static_cast<std::size_t>(cols * ldk));
  for (auto& x : k) x = static_cast<std::int8_t>(k_entry(engine));
  for (Index t = 0; t < d; ++t) k[std::size_t(column + t)] = (t % 3 == 0) ? -127 : 127;
  // Aligned to 64 bytes, as the decode path's buffers are.
  struct alignas(64) Line {
    std::int16_t x[32];
  };
  std::vector<Line> q_lines(static_cast<std::size_t>(rows * ldq / 32));
  std::int16_t* const q = q_lines.data()->x;
  std::vector<float> q_scales(rows), k_scales(static_cast<std::size_t>(cols * 5));
  for (Index r = 0; r < rows; ++r) {
    q_scales[std::size_t(r)] = scale(engine);
    for (Index t = 0; t < ldq; ++t) {
      std::int16_t x = static_cast<std::int16_t>(q_entry(engine));
      if (r == 0) x = 32767;
      if (r == 1) x = k[std::size_t(column + t)] < 0 ? -32767 : 32767;
      q[r * ldq + t] = t < d ? x : std::int16_t(0);
    }
  }
  for (auto& x : k_scales) x = scale(engine);
  const kernels::GroupScales group_scales{k_scales.data(), 5, d, column};
  std::vector<float> s(static_cast<std::size_t>(rows * lds), -1.0f);
  scores(q, q_scales.data(), rows, ldq, d, k.data() + column, ldk, cols, s.data(), lds, {},
         group_scales);
  for (Index r = 0; r < rows; ++r) {
    for (Index j = 0; j < cols; ++j) {
      float expected = 0;
      ::testing::AssertionResult fits =
          integer_score(q + r * ldq, k.data() + j * ldk + column, d, q_scales[std::size_t(r)],
                        k_scales[std::size_t(j * 5 + 3)], expected);
      if (!fits) return fits << " (row " << r << ", key " << j << ", d = " << d << ")";
      const float got = s[std::size_t(r * lds + j)];
      if (std::memcmp(&got, &expected, sizeof got) != 0) {
        return ::testing::AssertionFailure() << "row " << r << ", key " << j << ", d = " << d
                                             << ": " << got << " against " << expected;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

// Widths with a scalar tail (37, 80: 32-lane vectors leave 5 and 16), d = 128, and d = 1100:
// three blocks, whose whole sum at the extreme rows (32767 x 127 x 1100 = 4.6e9) would wrap an
// int32; every path this CPU runs (and vpdpwssd where the CPU has AVX512_VNNI) gives the
// formula's bits, so every path gives the same scores.
TEST(DecodeIntegerScores, EveryPathGivesTheWrittenFormulasBits) {
  for (const Index d : {37, 80, 128, 1100}) {
    EXPECT_TRUE(integer_scores_match_formula(&kernels::baseline::decode_scores_int16<float>, d))
        << "baseline";
#if ATTENTION_HAS_DISPATCH
    if (attention::isa_available(attention::Isa::avx2)) {
      EXPECT_TRUE(integer_scores_match_formula(&kernels::avx2::decode_scores_int16<float>, d))
          << "avx2";
    }
    if (attention::isa_available(attention::Isa::avx512)) {
      EXPECT_TRUE(integer_scores_match_formula(&kernels::avx512::decode_scores_int16<float>, d))
          << "avx512";
      if (kernels::avx512_vnni_available()) {
        EXPECT_TRUE(
            integer_scores_match_formula(&kernels::avx512::decode_scores_int16<float, true>, d))
            << "avx512 vnni";
      }
    }
#endif
  }
}

// The query rounding: s_q = max |q| / 32767, each entry within s_q (1/2 + 2^-9) of q (the bound
// of decode_kernels.hpp), the largest entry +-32767, zeros past d, and a zero row all zeros.
TEST(DecodeIntegerScores, QueryRowsRoundToSixteenBitsWithinHalfTheirScale) {
  const Index d = 70, padded = 96;
  std::mt19937 engine{5u};
  std::uniform_real_distribution<float> entry(-3.0f, 3.0f);
  std::vector<float> q(static_cast<std::size_t>(d));
  for (auto& x : q) x = entry(engine);
  q[17] = -4.5f;  // the largest magnitude
  std::vector<std::int16_t> out(static_cast<std::size_t>(padded), 99);
  const float s = kernels::round_query_int16(q.data(), d, out.data(), padded);
  EXPECT_EQ(s, 4.5f / 32767.0f);
  EXPECT_EQ(out[17], -32767);
  for (Index t = 0; t < padded; ++t) {
    const long double x = t < d ? q[std::size_t(t)] : 0.0L;
    EXPECT_LE(std::fabs(x - static_cast<long double>(out[std::size_t(t)]) * s),
              static_cast<long double>(s) * (0.5L + 0x1p-9L))
        << "entry " << t;
  }
  std::vector<float> zeros(static_cast<std::size_t>(d), 0.0f);
  EXPECT_EQ(kernels::round_query_int16(zeros.data(), d, out.data(), padded), 0.0f);
  EXPECT_TRUE(std::all_of(out.begin(), out.end(), [](std::int16_t x) { return x == 0; }));
}

}  // namespace
