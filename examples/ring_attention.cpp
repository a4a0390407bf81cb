// SPDX-License-Identifier: MIT
//
// ring_attention: one causal sequence spread over the ranks of an MPI job (context parallelism).
//   mpiexec -n 2 ./ring_attention          (Open MPI as root: add --allow-run-as-root)
// Each rank builds only its own tokens, runs attention::mpi::ring_attention (the key/value blocks
// travel around the ring of ranks) and its backward, and gets its own rows of the results. To show
// that nothing was lost on the way, every rank then also computes the single-process call on the
// whole sequence (which ring attention exists to avoid) and compares its rows with it.

#include <mpi.h>

#include <algorithm>
#include <attention/attention.hpp>
#include <attention/mpi.hpp>
#include <cmath>
#include <iostream>
#include <utility>
#include <vector>

namespace {

using attention::Index;
using attention::RowMatrixXf;

/// Token t's features, a function of t alone: any rank can build any token without the others.
/// (A real model would compute q, k and v from its own tokens' embeddings.)
RowMatrixXf token_features(const std::vector<Index>& positions, Index width, float phase) {
  RowMatrixXf x(static_cast<Index>(positions.size()), width);
  for (Index i = 0; i < x.rows(); ++i) {
    const auto t = static_cast<float>(positions[static_cast<std::size_t>(i)]);
    for (Index c = 0; c < width; ++c) {
      x(i, c) = std::sin(0.37f * (t + 1.0f) * static_cast<float>(c + 1) + phase);
    }
  }
  return x;
}

/// The rows of `all` at `positions`.
RowMatrixXf rows_at(const RowMatrixXf& all, const std::vector<Index>& positions) {
  RowMatrixXf out(static_cast<Index>(positions.size()), all.cols());
  for (Index i = 0; i < out.rows(); ++i)
    out.row(i) = all.row(positions[static_cast<std::size_t>(i)]);
  return out;
}

/// Largest |a - b| over this rank's entries, relative to the largest |b|, then the worst over the
/// ranks.
double worst_relative_difference(const RowMatrixXf& a, const RowMatrixXf& b) {
  double local = (a - b).cwiseAbs().maxCoeff() / std::max(1e-30f, b.cwiseAbs().maxCoeff());
  double worst = 0;
  MPI_Allreduce(&local, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}

}  // namespace

int main(int argc, char** argv) {
  // 1. Every rank runs this same program; MPI numbers them 0 .. P - 1.
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const bool talk = rank == 0;  // one rank prints, so lines do not interleave

  // 2. The layout. With a causal mask, contiguous shards would leave rank 0 idle (its tokens see
  //    only its own keys) while the last rank does most of the work. Zigzag cuts the sequence into
  //    2P chunks and gives rank r chunks r and 2P - 1 - r: an early and a late chunk each.
  const Index chunks = 2 * Index{ranks}, chunk = 256, seq_len = chunks * chunk, d_k = 64, d_v = 64;
  std::vector<Index> mine;
  for (Index c : {Index{rank}, chunks - 1 - rank}) {
    for (Index i = 0; i < chunk; ++i) mine.push_back(c * chunk + i);
  }
  if (talk) {
    std::cout << "ring attention on " << ranks << " ranks: N = " << seq_len
              << " tokens, d = " << d_k << ", causal, zigzag layout\n";
    for (Index r = 0; r < ranks; ++r) {
      std::cout << "  rank " << r << " holds positions " << r * chunk << '-' << (r + 1) * chunk - 1
                << " and " << (chunks - 1 - r) * chunk << '-' << (chunks - r) * chunk - 1 << '\n';
    }
  }

  // 3. This rank's rows of Q, K and V: 2 * chunk tokens, never the whole sequence.
  const RowMatrixXf q = token_features(mine, d_k, 0.0f);
  const RowMatrixXf k = token_features(mine, d_k, 1.0f);
  const RowMatrixXf v = token_features(mine, d_v, 2.0f);

  // 4. The forward. Every rank calls it with the same mask and options; each gets its own rows of
  //    softmax(Q K^T / sqrt(d_k) + causal) V, and of the log-sum-exp the backward needs.
  attention::mpi::RingStats stats;
  const attention::mpi::RingOptions ring{attention::mpi::Layout::zigzag, &stats};
  const auto forward =
      attention::mpi::ring_attention_lse(MPI_COMM_WORLD, q, k, v, attention::causal, {}, ring);
  if (talk) {
    std::cout << "forward: rank 0 attended to " << stats.blocks_computed << " blocks, skipped "
              << stats.blocks_skipped << ", sent " << stats.bytes_sent << " bytes of K/V\n";
  }

  // 5. The backward, from the forward's saved rows: dQ, dK and dV for this rank's tokens. The
  //    dK/dV sums travel with their blocks and come home to the block's owner.
  const RowMatrixXf d_out = token_features(mine, d_v, 3.0f);
  const auto grads = attention::mpi::ring_attention_backward(
      MPI_COMM_WORLD, q, k, v, forward.output, forward.lse, d_out, attention::causal, {}, ring);

  // 6. The check: the single-process calls on the whole sequence, compared row for row.
  std::vector<Index> everyone(static_cast<std::size_t>(seq_len));
  for (Index t = 0; t < seq_len; ++t) everyone[static_cast<std::size_t>(t)] = t;
  const RowMatrixXf all_q = token_features(everyone, d_k, 0.0f);
  const RowMatrixXf all_k = token_features(everyone, d_k, 1.0f);
  const RowMatrixXf all_v = token_features(everyone, d_v, 2.0f);
  const RowMatrixXf all_d_out = token_features(everyone, d_v, 3.0f);
  const auto single =
      attention::scaled_dot_product_attention_lse(all_q, all_k, all_v, attention::causal);
  const auto single_grads = attention::scaled_dot_product_attention_backward(
      all_q, all_k, all_v, single.output, single.lse, all_d_out, attention::causal);
  const double forward_error =
      worst_relative_difference(forward.output, rows_at(single.output, mine));
  double backward_error = 0;
  for (const auto& [ring_grad, single_grad] :
       {std::pair{&grads.dq, &single_grads.dq}, std::pair{&grads.dk, &single_grads.dk},
        std::pair{&grads.dv, &single_grads.dv}}) {
    backward_error = std::max(backward_error,
                              worst_relative_difference(*ring_grad, rows_at(*single_grad, mine)));
  }
  const bool ok = forward_error <= 1e-5 && backward_error <= 1e-4;
  if (talk) {
    const auto yes_no = [](bool b) { return b ? "yes" : "NO"; };
    std::cout << "forward matches the single-process call (max |difference| <= 1e-5 x largest "
                 "|output|): "
              << yes_no(forward_error <= 1e-5) << '\n'
              << "backward matches the single-process call (max |difference| <= 1e-4 x largest "
                 "|gradient|): "
              << yes_no(backward_error <= 1e-4) << '\n'
              << "each rank holds " << mine.size() << " of the " << seq_len
              << " rows of Q, and K/V blocks of " << mine.size()
              << " rows: its own, and the one arriving\n";
  }
  MPI_Finalize();
  return ok ? 0 : 1;
}
