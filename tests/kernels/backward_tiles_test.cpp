// SPDX-License-Identifier: MIT
//
// kernels/backward_tiles.hpp: one key span of the tiled backward (process_key_span), run on inputs
// prepared as backward.hpp prepares them, against the materialising backward: each span writes the
// dk and dv rows of its own keys, adds its share of dq to its partial sum, and a span the mask
// hides from every query leaves its partial dq unstarted and its gradients 0.

#include <gtest/gtest.h>

#include <attention/attention.hpp>
#include <attention/kernels/backward_tiles.hpp>
#include <cmath>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
namespace kernels = attention::detail::kernels;

template <typename Scalar>
class BackwardTiles : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(BackwardTiles, FastScalars, support::ScalarNames);

template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;
template <typename Scalar>
using TileBuffer = kernels::Buffer<Scalar>;

/// A problem of L queries and S keys, padded and packed as attention_backward does, with spans of
/// `KeySpan` key blocks.
template <typename Scalar, Index KeySpan>
struct SpanProblem {
  using G = kernels::BackwardGeometry<Scalar>;
  static constexpr Index span_cols = KeySpan * G::block_cols;
  Index rows_padded, keys_padded, dkp, dvp, dkc;
  TileBuffer<Scalar> q, k, k_panels, v_panels, d_out, lse, delta;
  Matrix<Scalar> dk, dv;
  kernels::BackwardProblem<Scalar> pb;

  SpanProblem(const Matrix<Scalar>& q_in, const Matrix<Scalar>& k_in, const Matrix<Scalar>& v_in,
              const Matrix<Scalar>& out, const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& lse_in,
              const Matrix<Scalar>& d_out_in, const kernels::ScoreRules<Scalar>& rules)
      : rows_padded(kernels::round_up(q_in.rows(), G::block_rows)),
        keys_padded(kernels::round_up(k_in.rows(), span_cols)),
        dkp(kernels::round_up(q_in.cols(), G::width)),
        dvp(kernels::round_up(v_in.cols(), G::width)),
        dkc(kernels::round_up(q_in.cols(), 2 * G::width)),
        q(TileBuffer<Scalar>::Zero(rows_padded * dkp)),
        k(keys_padded * dkc),
        k_panels(keys_padded * q_in.cols()),
        v_panels(keys_padded * v_in.cols()),
        d_out(TileBuffer<Scalar>::Zero(rows_padded * dvp)),
        lse(TileBuffer<Scalar>::Constant(rows_padded, -std::numeric_limits<Scalar>::infinity())),
        delta(TileBuffer<Scalar>::Zero(rows_padded)),
        dk(Matrix<Scalar>::Constant(k_in.rows(), k_in.cols(), Scalar(99))),
        dv(Matrix<Scalar>::Constant(v_in.rows(), v_in.cols(), Scalar(99))) {
    const Index L = q_in.rows(), S = k_in.rows(), d_k = q_in.cols(), d_v = v_in.cols();
    for (Index i = 0; i < L; ++i) {
      rules.load_query(q_in.data() + i * d_k, d_k, q.data() + i * dkp);
      for (Index x = 0; x < d_v; ++x) d_out(i * dvp + x) = d_out_in(i, x);
      lse(i) = lse_in(i);
      delta(i) = (d_out_in.row(i).array() * out.row(i).array()).sum();
    }
    for (Index span = 0; span * span_cols < S; ++span) {
      kernels::pack_span_keys<Scalar, G>(k_in.data(), d_k, S, d_k, span, span_cols,
                                         k.data() + span * span_cols * dkc);
    }
    for (Index kb = 0; kb * G::block_cols < S; ++kb) {
      kernels::pack_panel_columns<Scalar, G>(k_in.data(), d_k, S, d_k, kb,
                                             k_panels.data() + kb * d_k * G::block_cols);
      kernels::pack_panel_columns<Scalar, G>(v_in.data(), d_v, S, d_v, kb,
                                             v_panels.data() + kb * d_v * G::block_cols);
    }
    pb = {L,
          S,
          d_k,
          d_v,
          dkp,
          dvp,
          dkc,
          rules,
          q.data(),
          k.data(),
          k_panels.data(),
          v_panels.data(),
          d_out.data(),
          lse.data(),
          delta.data(),
          dk.data(),
          dk.outerStride(),
          dv.data(),
          dv.outerStride(),
          nullptr,
          0};
  }
};

// Two spans of 8 key blocks (the second one short), two query blocks (the second one short), no
// mask and causal (under which the second span is hidden from every query).
TYPED_TEST(BackwardTiles, EachSpanWritesItsKeysGradientsAndItsShareOfDq) {
  using Scalar = TypeParam;
  using G = kernels::BackwardGeometry<Scalar>;
  constexpr Index key_span = kernels::max_key_span, span_cols = key_span * G::block_cols;
  const Index L = G::block_rows + 5, S = span_cols + span_cols / 2 + 1, d_k = 12, d_v = 9;
  ASSERT_LE(L, span_cols);
  const Matrix<Scalar> q = support::random_matrix<Scalar>(L, d_k, 1);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(S, d_k, 2);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(S, d_v, 3);
  const Matrix<Scalar> d_out = support::random_matrix<Scalar>(L, d_v, 4);
  const kernels::ScoreRules<Scalar> rules{Scalar(1) / std::sqrt(Scalar(d_k))};
  const auto run = [&](const auto& mask, bool second_span_hidden) {
    const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask);
    const auto expected = attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask);
    SpanProblem<Scalar, key_span> problem(q, k, v, forward.output, forward.lse, d_out, rules);
    const Index num_query_blocks = problem.rows_padded / G::block_rows;
    kernels::BackwardThreadWorkspace<Scalar> ws;
    ws.reserve(G::block_rows, kernels::max_key_span * G::block_cols, problem.dkp, problem.dvp,
               false);
    Matrix<Scalar> dq = Matrix<Scalar>::Zero(L, d_k);
    const auto bound = attention::detail::bind_mask(mask, L, S);
    for (Index span = 0; span < 2; ++span) {
      TileBuffer<Scalar> partial =
          TileBuffer<Scalar>::Constant(problem.rows_padded * problem.dkp, 77);
      std::vector<unsigned char> started(static_cast<std::size_t>(num_query_blocks), 0);
      kernels::process_key_span<key_span>(problem.pb, bound, span, partial.data(), started.data(),
                                          ws);
      for (Index qb = 0; qb < num_query_blocks; ++qb) {
        const bool hidden = span == 1 && second_span_hidden;
        EXPECT_EQ(started[static_cast<std::size_t>(qb)], hidden ? 0 : 1)
            << "span " << span << ", query block " << qb;
        if (started[static_cast<std::size_t>(qb)] == 0) continue;
        for (Index i = qb * G::block_rows; i < std::min(L, (qb + 1) * G::block_rows); ++i) {
          for (Index x = 0; x < d_k; ++x) dq(i, x) += rules.scale * partial(i * problem.dkp + x);
        }
      }
    }
    // dk and dv: every key row written once, by its span.
    EXPECT_TRUE(support::is_near(problem.dk, expected.dk, support::tolerance<Scalar>()));
    EXPECT_TRUE(support::is_near(problem.dv, expected.dv, support::tolerance<Scalar>()));
    EXPECT_TRUE(support::is_near(dq, expected.dq, support::tolerance<Scalar>()));
    if (second_span_hidden) {
      const Index first = key_span * G::block_cols;
      EXPECT_TRUE((problem.dk.bottomRows(S - first).array() == Scalar(0)).all());
      EXPECT_TRUE((problem.dv.bottomRows(S - first).array() == Scalar(0)).all());
    }
  };
  run(attention::NoMask{}, false);
  run(attention::causal, true);
}

}  // namespace
