// SPDX-License-Identifier: MIT
// Tests for attention/mpi/ring_options.hpp: what RingOptions::stats reports of a ring call (blocks
// computed and skipped, bytes sent, time), against the counts written out from the ring's
// schedule. Part of ring_attention_test (tests/mpi_test.cpp has its main()), run on every rank.

#include <gtest/gtest.h>
#include <mpi.h>

#include <attention/attention.hpp>
#include <attention/mpi.hpp>

#include "support/random.hpp"
#include "support/ring.hpp"

namespace {

using attention::Index;
using attention::mpi::Layout;
using attention::mpi::RingStats;
using support::ring::held_rows;
using support::ring::Matrix;
using support::ring::take_rows;
using support::ring::total;
using support::ring::uneven_sizes;
using support::ring::world_rank;
using support::ring::world_size;
using support::ring::zigzag_sizes;

// --- Communication
// ---------------------------------------------------------------------------------

/// Bytes of the K/V blocks rank `rank` sends: at step s < P - 1, the block of rank (rank - s).
Index block_bytes_sent(int rank, const std::vector<Index>& k_sizes, Index width, Index scalar) {
  const int ranks = static_cast<int>(k_sizes.size());
  Index bytes = 0;
  for (int s = 0; s + 1 < ranks; ++s) {
    bytes += k_sizes[static_cast<std::size_t>((rank - s + ranks) % ranks)] * width * scalar;
  }
  return bytes;
}

// Contiguous causal: rank r's queries come after blocks 0 .. r and before the rest, so it computes
// r + 1 blocks and skips P - 1 - r; every block still travels the whole ring.
TEST(RingAttentionStats, CausalContiguousSkipsHiddenBlocksAndForwardsThem) {
  const int rank = world_rank(), ranks = world_size();
  const std::vector<Index> sizes = uneven_sizes();
  const Matrix<float> x = support::random_matrix<float>(total(sizes), 16, 110);
  const Matrix<float> mine = take_rows(x, held_rows(Layout::contiguous, rank, sizes));
  RingStats stats;
  const auto out =
      attention::mpi::ring_attention(MPI_COMM_WORLD, mine, mine, mine.leftCols(8),
                                     attention::causal, {}, {Layout::contiguous, &stats});
  EXPECT_EQ(out.rows(), mine.rows());
  EXPECT_EQ(stats.blocks_computed, rank + 1);
  EXPECT_EQ(stats.blocks_skipped, ranks - 1 - rank);
  EXPECT_EQ(stats.bytes_sent, block_bytes_sent(rank, sizes, 16 + 8, 4));
  EXPECT_GE(stats.seconds_total, stats.seconds_computing + stats.seconds_waiting);
}

// Zigzag causal: every rank computes with every block (none wholly hidden). The backward sends the
// blocks and, at every step, the dK/dV sums of the block it holds.
TEST(RingAttentionStats, ZigzagComputesEveryBlockAndBackwardSendsTheSums) {
  const int rank = world_rank(), ranks = world_size();
  const std::vector<Index> sizes = zigzag_sizes();
  const Matrix<double> x = support::random_matrix<double>(total(sizes), 12, 120);
  const std::vector<Index> rows = held_rows(Layout::zigzag, rank, sizes);
  const Matrix<double> mine = take_rows(x, rows);
  RingStats stats;
  const auto forward = attention::mpi::ring_attention_lse(
      MPI_COMM_WORLD, mine, mine, mine, attention::causal, {}, {Layout::zigzag, &stats});
  EXPECT_EQ(stats.blocks_computed, ranks);
  EXPECT_EQ(stats.blocks_skipped, 0);
  EXPECT_EQ(stats.bytes_sent, block_bytes_sent(rank, sizes, 24, 8));
  const auto grads = attention::mpi::ring_attention_backward(
      MPI_COMM_WORLD, mine, mine, mine, forward.output, forward.lse, mine, attention::causal, {},
      {Layout::zigzag, &stats});
  const Index sums_bytes = ranks > 1 ? total(sizes) * 24 * 8 : 0;  // every block's sums, once
  EXPECT_EQ(stats.bytes_sent, block_bytes_sent(rank, sizes, 24, 8) + sums_bytes);
  EXPECT_EQ(grads.dq.rows(), mine.rows());
}

}  // namespace
