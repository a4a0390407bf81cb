// SPDX-License-Identifier: MIT
//
// The bookkeeping of ring attention (attention/mpi/ring_schedule.hpp), without MPI: which global
// rows each rank holds, and that the kernel calls planned for a (query shard, key block) pair
// cover exactly the pairs the causal rule makes visible, each once.

#include <gtest/gtest.h>

#include <attention/mpi/ring_schedule.hpp>
#include <cstdint>
#include <vector>

namespace {

using attention::Index;
using attention::mpi::Layout;
using attention::mpi::detail::Call;
using attention::mpi::detail::CallMask;
using attention::mpi::detail::plan_block;
using attention::mpi::detail::Shard;
using attention::mpi::detail::shard_of;

/// The global position of each local row of `shard`.
std::vector<Index> positions(const Shard& shard) {
  std::vector<Index> out;
  for (int s = 0; s < shard.count; ++s) {
    const auto& segment = shard.segments[s];
    EXPECT_EQ(segment.local_begin, static_cast<Index>(out.size()));
    for (Index i = 0; i < segment.rows; ++i) out.push_back(segment.global_begin + i);
  }
  return out;
}

TEST(ShardOf, ContiguousRanksHoldConsecutiveRowsInRankOrder) {
  const std::vector<Index> sizes = {3, 1, 5};
  EXPECT_EQ(positions(shard_of(Layout::contiguous, 0, sizes)), (std::vector<Index>{0, 1, 2}));
  EXPECT_EQ(positions(shard_of(Layout::contiguous, 1, sizes)), (std::vector<Index>{3}));
  EXPECT_EQ(positions(shard_of(Layout::contiguous, 2, sizes)), (std::vector<Index>{4, 5, 6, 7, 8}));
}

// N = 12, P = 3: chunks of 2; rank r holds chunks r and 5 - r.
TEST(ShardOf, ZigzagRankHoldsChunksRAnd2PMinus1MinusR) {
  const std::vector<Index> sizes = {4, 4, 4};
  EXPECT_EQ(positions(shard_of(Layout::zigzag, 0, sizes)), (std::vector<Index>{0, 1, 10, 11}));
  EXPECT_EQ(positions(shard_of(Layout::zigzag, 1, sizes)), (std::vector<Index>{2, 3, 8, 9}));
  EXPECT_EQ(positions(shard_of(Layout::zigzag, 2, sizes)), (std::vector<Index>{4, 5, 6, 7}));
}

/// How many times the calls make local query row i see local key row j, as an L x S table. A call
/// with causal_lower_right over an l x s range lets its row a see its key b iff b <= a + s - l.
std::vector<std::vector<int>> coverage(const std::vector<Call>& calls, Index q_rows, Index k_rows) {
  std::vector<std::vector<int>> seen(static_cast<std::size_t>(q_rows),
                                     std::vector<int>(static_cast<std::size_t>(k_rows), 0));
  for (const Call& c : calls) {
    EXPECT_GE(c.q_rows, 1);
    EXPECT_GE(c.k_rows, 1);
    EXPECT_LE(c.q_begin + c.q_rows, q_rows);
    EXPECT_LE(c.k_begin + c.k_rows, k_rows);
    for (Index a = 0; a < c.q_rows; ++a) {
      for (Index b = 0; b < c.k_rows; ++b) {
        const bool visible = c.mask == CallMask::none || b <= a + c.k_rows - c.q_rows;
        if (visible)
          ++seen[static_cast<std::size_t>(c.q_begin + a)][static_cast<std::size_t>(c.k_begin + b)];
      }
    }
  }
  return seen;
}

/// Every (query shard, key block) pair of `sizes` under `layout`, with pieces of `piece_rows`: the
/// calls must cover exactly the pairs with key position <= query position (causal) or every pair
/// (not causal), each once.
void expect_exact_cover(Layout layout, const std::vector<Index>& sizes, Index piece_rows) {
  const int ranks = static_cast<int>(sizes.size());
  for (int qr = 0; qr < ranks; ++qr) {
    for (int kr = 0; kr < ranks; ++kr) {
      const Shard q = shard_of(layout, qr, sizes), k = shard_of(layout, kr, sizes);
      const std::vector<Index> q_pos = positions(q), k_pos = positions(k);
      for (bool causal : {false, true}) {
        SCOPED_TRACE(::testing::Message()
                     << "query rank " << qr << ", key rank " << kr << (causal ? ", causal" : "")
                     << ", pieces of " << piece_rows);
        const auto seen =
            coverage(plan_block(q, k, causal, piece_rows), static_cast<Index>(q_pos.size()),
                     static_cast<Index>(k_pos.size()));
        int wrong = 0;
        for (std::size_t i = 0; i < q_pos.size(); ++i) {
          for (std::size_t j = 0; j < k_pos.size(); ++j) {
            const int expected = !causal || k_pos[j] <= q_pos[i] ? 1 : 0;
            wrong += seen[i][j] != expected;
          }
        }
        EXPECT_EQ(wrong, 0);
      }
    }
  }
}

TEST(PlanBlock, ContiguousUnevenShardsCoverTheCausalTriangleOnce) {
  for (Index piece_rows : {1, 2, 3, 256}) {
    expect_exact_cover(Layout::contiguous, {5}, piece_rows);
    expect_exact_cover(Layout::contiguous, {1, 7}, piece_rows);
    expect_exact_cover(Layout::contiguous, {4, 1, 9, 2}, piece_rows);
    expect_exact_cover(Layout::contiguous, {6, 6, 6}, piece_rows);
  }
}

TEST(PlanBlock, ZigzagShardsCoverTheCausalTriangleOnce) {
  for (Index piece_rows : {1, 2, 3, 256}) {
    expect_exact_cover(Layout::zigzag, {6}, piece_rows);
    expect_exact_cover(Layout::zigzag, {4, 4}, piece_rows);
    expect_exact_cover(Layout::zigzag, {6, 6, 6}, piece_rows);
    expect_exact_cover(Layout::zigzag, {2, 2, 2, 2}, piece_rows);
  }
}

// Zigzag, P = 2 (chunks of 3): rank 0 holds positions 0-2 and 9-11, rank 1 holds 3-8. Rank 0's
// early chunk sees nothing of rank 1's block, its late chunk sees all of it in one call; against
// its own block it makes a causal call per chunk and one unmasked (chunk 3 against chunk 0).
TEST(PlanBlock, ZigzagPairsAreFullCausalOrSkipped) {
  const std::vector<Index> sizes = {6, 6};
  const Shard rank0 = shard_of(Layout::zigzag, 0, sizes),
              rank1 = shard_of(Layout::zigzag, 1, sizes);
  const std::vector<Call> against_rank1 = plan_block(rank0, rank1, true, 256);
  ASSERT_EQ(against_rank1.size(), 1u);
  EXPECT_EQ(against_rank1[0].q_begin, 3);
  EXPECT_EQ(against_rank1[0].q_rows, 3);
  EXPECT_EQ(against_rank1[0].k_begin, 0);
  EXPECT_EQ(against_rank1[0].k_rows, 6);
  EXPECT_EQ(against_rank1[0].mask, CallMask::none);
  EXPECT_EQ(plan_block(rank0, rank0, true, 256).size(), 3u);
  // Rank 1's chunks (positions 3-5, 6-8) see all of rank 0's early chunk and none of its late one.
  const std::vector<Call> against_rank0 = plan_block(rank1, rank0, true, 256);
  ASSERT_EQ(against_rank0.size(), 2u);
  for (const Call& c : against_rank0) {
    EXPECT_EQ(c.k_begin, 0);
    EXPECT_EQ(c.k_rows, 3);
    EXPECT_EQ(c.mask, CallMask::none);
  }
}

// Contiguous causal: a query shard entirely before a key block makes no call (the block is
// skipped); one entirely after it makes a single unmasked call.
TEST(PlanBlock, ContiguousHiddenBlocksMakeNoCall) {
  const std::vector<Index> sizes = {3, 4};
  const Shard first = shard_of(Layout::contiguous, 0, sizes);
  const Shard second = shard_of(Layout::contiguous, 1, sizes);
  EXPECT_TRUE(plan_block(first, second, true, 256).empty());
  const std::vector<Call> later = plan_block(second, first, true, 256);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_EQ(later[0].mask, CallMask::none);
  EXPECT_EQ(plan_block(first, second, false, 256).size(), 1u);
}

}  // namespace
