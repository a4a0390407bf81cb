// SPDX-License-Identifier: MIT
//
// Determinism: the same inputs give the same bits
//   - whatever the number of threads (1, 2, 3; set with Eigen::setNbThreads or
//   omp_set_num_threads),
//   - on every repeated call, with or without a reused AttentionWorkspace,
//   - whether a batch is computed in one call or in parts: query rows split into several calls
//     (anywhere, not only at a multiple of the kernel's tile, detail::flash::Geometry::block_rows),
//     or the heads of a multi-head layer run one by one.
// Built with OpenMP (tests/trust/CMakeLists.txt), so the tiled kernel and Eigen's products really
// run on several threads.

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "attention/attention.hpp"
#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "trust/trust_support.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using attention::Index;
template <typename Scalar>
using Mat = attention::Matrix<Scalar>;
using BoolMat = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Runs `body` with n threads, set through Eigen (which the kernel and Eigen's products read) or
/// through OpenMP (which Eigen follows when its own setting is 0), and restores the defaults.
enum class ThreadSetting { eigen, openmp };

template <typename Result>
Result with_threads(int n, ThreadSetting how, const std::function<Result()>& body) {
#if defined(_OPENMP)
  const int omp_default = omp_get_max_threads();
  if (how == ThreadSetting::eigen) {
    Eigen::setNbThreads(n);
  } else {
    Eigen::setNbThreads(0);  // 0: follow OpenMP
    omp_set_num_threads(n);
  }
  EXPECT_EQ(Eigen::nbThreads(), n);
  Result result = body();
  Eigen::setNbThreads(0);
  omp_set_num_threads(omp_default);
  return result;
#else
  (void)n;
  (void)how;
  return body();
#endif
}

bool built_with_openmp() {
#if defined(_OPENMP)
  return true;
#else
  return false;
#endif
}

/// Causal visibility as a keep mask, so that a block of its rows masks a block of queries the same
/// way (attention::causal is relative to the call's own first query).
BoolMat causal_keep(Index rows, Index cols) {
  BoolMat keep(rows, cols);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) keep(i, j) = j <= i;
  }
  return keep;
}

template <typename Scalar>
class Determinism : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;  // the tiled kernel's types
TYPED_TEST_SUITE(Determinism, Scalars, support::ScalarNames);

// Sizes: several query and key tiles, none a multiple of a tile or of the SIMD width.
constexpr Index seq_q = 301, seq_k = 283, head_dim = 72, value_dim = 40;

template <typename Scalar>
struct Inputs {
  Mat<Scalar> q = support::random_matrix<Scalar>(seq_q, head_dim, 21);
  Mat<Scalar> k = support::random_matrix<Scalar>(seq_k, head_dim, 22);
  Mat<Scalar> v = support::random_matrix<Scalar>(seq_k, value_dim, 23);
  BoolMat keep = support::random_keep(seq_q, seq_k, 24, 0.7);
  Mat<Scalar> bias = support::random_matrix<Scalar>(seq_q, seq_k, 25);
};

TYPED_TEST(Determinism, ScaledDotProductIsBitwiseIdenticalAcrossThreadCounts) {
  using Scalar = TypeParam;
  if (!built_with_openmp()) GTEST_SKIP() << "built without OpenMP: the kernel runs serially";
  const Inputs<Scalar> in;
  const auto run_all = [&] {
    std::vector<Mat<Scalar>> outs;
    outs.push_back(attention::scaled_dot_product_attention(in.q, in.k, in.v));
    outs.push_back(attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal));
    outs.push_back(
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(in.keep)));
    outs.push_back(
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(in.bias)));
    outs.push_back(
        attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::causal).lse);
    return outs;
  };
  for (const ThreadSetting how : {ThreadSetting::eigen, ThreadSetting::openmp}) {
    const auto one = with_threads<std::vector<Mat<Scalar>>>(1, how, run_all);
    for (const int n : {2, 3}) {
      SCOPED_TRACE(std::to_string(n) +
                   (how == ThreadSetting::eigen ? " threads (Eigen)" : " threads (OpenMP)"));
      const auto many = with_threads<std::vector<Mat<Scalar>>>(n, how, run_all);
      for (std::size_t i = 0; i < one.size(); ++i)
        EXPECT_TRUE(trust::identical(many[i], one[i])) << "case " << i;
    }
  }
}

// All-bfloat16 calls (on a CPU with AVX512_BF16 the vdpbf16ps kernel, kernels/bf16_forward.hpp,
// else the float kernel widening them): the same bits for any thread count.
TEST(BFloat16Determinism, ScaledDotProductIsBitwiseIdenticalAcrossThreadCounts) {
  if (!built_with_openmp()) GTEST_SKIP() << "built without OpenMP: the kernel runs serially";
  const Inputs<float> in;
  const Mat<Eigen::bfloat16> q = in.q.cast<Eigen::bfloat16>(), k = in.k.cast<Eigen::bfloat16>(),
                             v = in.v.cast<Eigen::bfloat16>();
  const auto run_all = [&] {
    std::vector<Mat<float>> outs;
    outs.push_back(attention::scaled_dot_product_attention(q, k, v).cast<float>());
    outs.push_back(
        attention::scaled_dot_product_attention(q, k, v, attention::causal).cast<float>());
    outs.push_back(
        attention::scaled_dot_product_attention(q, k, v, attention::keep(in.keep)).cast<float>());
    outs.push_back(attention::scaled_dot_product_attention_lse(q, k, v, attention::causal).lse);
    return outs;
  };
  const auto one = with_threads<std::vector<Mat<float>>>(1, ThreadSetting::eigen, run_all);
  for (const int n : {2, 3}) {
    SCOPED_TRACE(std::to_string(n) + " threads");
    const auto many = with_threads<std::vector<Mat<float>>>(n, ThreadSetting::eigen, run_all);
    for (std::size_t i = 0; i < one.size(); ++i)
      EXPECT_TRUE(trust::identical(many[i], one[i])) << "case " << i;
  }
}

TYPED_TEST(Determinism, ScaledDotProductIsBitwiseIdenticalAcrossCallsAndWorkspaces) {
  using Scalar = TypeParam;
  const Inputs<Scalar> in;
  const Mat<Scalar> first =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  attention::AttentionWorkspace<Scalar> workspace;
  Mat<Scalar> out(seq_q, value_dim);
  for (int call = 0; call < 3; ++call) {
    SCOPED_TRACE(call);
    EXPECT_TRUE(trust::identical(
        attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal), first));
    out.setConstant(Scalar(-7));
    attention::scaled_dot_product_attention(in.q, in.k, in.v, out, workspace, attention::causal);
    EXPECT_TRUE(trust::identical(out, first));
    // A smaller call in between leaves the (larger) workspace with other contents.
    Mat<Scalar> small(5, value_dim);
    attention::scaled_dot_product_attention(in.q.topRows(5), in.k.topRows(9), in.v.topRows(9),
                                            small, workspace);
  }
  // The log-sum-exp variant computes the same output.
  EXPECT_TRUE(trust::identical(
      attention::scaled_dot_product_attention_lse(in.q, in.k, in.v, attention::causal).output,
      first));
}

// Query tiles are independent: each query row's scores, running max and sum and output depend only
// on that row and the keys. So rows computed in a call on a part of the queries are the rows of the
// whole call, bit for bit -- for a split anywhere, not only at a multiple of the tile height.
TYPED_TEST(Determinism, QueryRowsSplitIntoPartsGiveTheSameBits) {
  using Scalar = TypeParam;
  using G = attention::detail::flash::Geometry<Scalar>;
  const Inputs<Scalar> in;
  const BoolMat causal = causal_keep(seq_q, seq_k);
  const Mat<Scalar> whole = attention::scaled_dot_product_attention(in.q, in.k, in.v);
  const Mat<Scalar> whole_causal =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::keep(causal));
  const Mat<Scalar> whole_bias =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::bias(in.bias));
  for (const Index split :
       {G::block_rows, 2 * G::block_rows, Index(1), Index(37), Index(seq_q - 1)}) {
    SCOPED_TRACE("split at row " + std::to_string(split) + ", block_rows " +
                 std::to_string(G::block_rows));
    const Index rest = seq_q - split;
    Mat<Scalar> parts(seq_q, value_dim), parts_causal(seq_q, value_dim),
        parts_bias(seq_q, value_dim);
    attention::scaled_dot_product_attention(in.q.topRows(split), in.k, in.v, parts.topRows(split));
    attention::scaled_dot_product_attention(in.q.bottomRows(rest), in.k, in.v,
                                            parts.bottomRows(rest));
    attention::scaled_dot_product_attention(in.q.topRows(split), in.k, in.v,
                                            parts_causal.topRows(split),
                                            attention::keep(causal.topRows(split)));
    attention::scaled_dot_product_attention(in.q.bottomRows(rest), in.k, in.v,
                                            parts_causal.bottomRows(rest),
                                            attention::keep(causal.bottomRows(rest)));
    attention::scaled_dot_product_attention(in.q.topRows(split), in.k, in.v,
                                            parts_bias.topRows(split),
                                            attention::bias(in.bias.topRows(split)));
    attention::scaled_dot_product_attention(in.q.bottomRows(rest), in.k, in.v,
                                            parts_bias.bottomRows(rest),
                                            attention::bias(in.bias.bottomRows(rest)));
    EXPECT_TRUE(trust::identical(parts, whole));
    EXPECT_TRUE(trust::identical(parts_causal, whole_causal));
    EXPECT_TRUE(trust::identical(parts_bias, whole_bias));
  }
  // The causal mask itself, split at a tile boundary: the first part is the same call on fewer
  // queries (causal is top-left aligned, so the first `split` queries see the same keys).
  const Mat<Scalar> whole_top =
      attention::scaled_dot_product_attention(in.q, in.k, in.v, attention::causal);
  for (const Index split : {G::block_rows, Index(37)}) {
    EXPECT_TRUE(trust::identical(
        attention::scaled_dot_product_attention(in.q.topRows(split), in.k, in.v, attention::causal),
        whole_top.topRows(split)));
  }
}

// A multi-head layer. d_model = 512 is above Eigen's multi-threaded depth block (320 for float with
// SSE), where an Eigen product would be blocked differently with one thread and with several; the
// layer's projections (kernels/projection.hpp) compute each row on its own in a fixed order.
template <typename Scalar>
attention::MultiHeadAttention<Scalar> make_layer(Index d_model, Index num_heads) {
  attention::MultiHeadAttention<Scalar> layer(d_model, num_heads);
  layer.reset_parameters(31);
  layer.b_q = support::random_matrix<Scalar>(1, d_model, 32);
  layer.b_o = support::random_matrix<Scalar>(1, d_model, 33);
  return layer;
}

TYPED_TEST(Determinism, MultiHeadForwardIsBitwiseIdenticalAcrossThreadCounts) {
  using Scalar = TypeParam;
  if (!built_with_openmp()) GTEST_SKIP() << "built without OpenMP: everything runs serially";
  for (const Index d_model : {Index(128), Index(512)}) {
    SCOPED_TRACE("d_model " + std::to_string(d_model));
    const auto layer = make_layer<Scalar>(d_model, 8);
    const Mat<Scalar> x = support::random_matrix<Scalar>(seq_q, d_model, 34);
    const auto run = [&] { return layer.forward(x, attention::causal); };
    const Mat<Scalar> one = with_threads<Mat<Scalar>>(1, ThreadSetting::eigen, run);
    for (const int n : {2, 3}) {
      SCOPED_TRACE(std::to_string(n) + " threads");
      const Mat<Scalar> many = with_threads<Mat<Scalar>>(n, ThreadSetting::eigen, run);
      EXPECT_TRUE(trust::identical(many, one));
    }
    EXPECT_TRUE(trust::identical(run(), one)) << "repeated call";
  }
}

// The heads of a layer run together in one parallel region; each head alone through
// scaled_dot_product_attention on the same column views gives the same bits. (The layer projects
// with detail::projection::project, not with attention::project's Eigen product.)
TYPED_TEST(Determinism, MultiHeadEqualsItsHeadsRunOneByOne) {
  using Scalar = TypeParam;
  const Index d_model = 96, num_heads = 4, dh = d_model / num_heads;
  const auto layer = make_layer<Scalar>(d_model, num_heads);
  const Mat<Scalar> query = support::random_matrix<Scalar>(seq_q, d_model, 35);
  const Mat<Scalar> memory = support::random_matrix<Scalar>(seq_k, d_model, 36);
  const auto project = [](const Mat<Scalar>& x, const Mat<Scalar>& w,
                          const attention::RowVector<Scalar>& b) {
    Mat<Scalar> y(x.rows(), w.cols());
    attention::detail::projection::project<Scalar>(x, w, b, y);
    return y;
  };
  const Mat<Scalar> q = project(query, layer.w_q, layer.b_q);
  const Mat<Scalar> k = project(memory, layer.w_k, layer.b_k);
  const Mat<Scalar> v = project(memory, layer.w_v, layer.b_v);
  Mat<Scalar> heads(seq_q, d_model);
  for (Index h = 0; h < num_heads; ++h) {
    attention::scaled_dot_product_attention(q.middleCols(h * dh, dh), k.middleCols(h * dh, dh),
                                            v.middleCols(h * dh, dh), heads.middleCols(h * dh, dh),
                                            attention::causal);
  }
  const Mat<Scalar> expected = project(heads, layer.w_o, layer.b_o);
  EXPECT_TRUE(trust::identical(layer.forward(query, memory, memory, attention::causal), expected));
}

// Query rows of a multi-head layer split into two calls: the attention part is split-invariant
// (above), and so are the layer's projections, which compute each row on its own (an Eigen product
// would not be: a row's sum order depends on where it falls in Eigen's register blocking, and a
// one-row product takes the GEMV path). Checked at tile, SIMD and odd split points.
TYPED_TEST(Determinism, MultiHeadQueryRowsSplitIntoPartsGiveTheSameBits) {
  using Scalar = TypeParam;
  const Index d_model = 64;
  const auto layer = make_layer<Scalar>(d_model, 4);
  const Mat<Scalar> query = support::random_matrix<Scalar>(seq_q, d_model, 37);
  const Mat<Scalar> memory = support::random_matrix<Scalar>(seq_k, d_model, 38);
  const Mat<Scalar> whole = layer.forward(query, memory, memory);
  for (const Index split :
       {Index(48), Index(96), Index(64), Index(37), Index(1), Index(seq_q - 1)}) {
    const Index rest = seq_q - split;
    Mat<Scalar> parts(seq_q, d_model);
    parts.topRows(split) = layer.forward(query.topRows(split), memory, memory);
    parts.bottomRows(rest) = layer.forward(query.bottomRows(rest), memory, memory);
    EXPECT_TRUE(trust::identical(parts, whole)) << "split at " << split;
  }
}

}  // namespace
