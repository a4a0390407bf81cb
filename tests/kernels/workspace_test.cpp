// SPDX-License-Identifier: MIT
//
// kernels/workspace.hpp: buffers grow to what a call asks and never shrink, so a workspace that has
// served a call of some sizes serves any call of the same or smaller sizes without allocating.
// (trust/no_malloc_test.cpp checks the whole call under EIGEN_RUNTIME_NO_MALLOC.)

#include <gtest/gtest.h>

#include <attention/kernels/workspace.hpp>
#include <attention/workspace.hpp>
#include <cstdint>

namespace {

using attention::Index;
namespace kernels = attention::detail::kernels;

TEST(KernelWorkspace, GrowNeverShrinksAndKeepsTheAllocation) {
  kernels::Buffer<float> b;
  kernels::grow(b, 100);
  EXPECT_EQ(b.size(), 100);
  const float* const data = b.data();
  kernels::grow(b, 40);
  EXPECT_EQ(b.size(), 100);
  EXPECT_EQ(b.data(), data);
  kernels::grow(b, 100);
  EXPECT_EQ(b.data(), data);
  kernels::grow(b, 101);
  EXPECT_EQ(b.size(), 101);
}

// What a forward call of block_rows x block_cols tiles with d_k = 24, d_v (padded) = 32 on 3
// threads reserves, and that a smaller call keeps every buffer where it was.
TEST(KernelWorkspace, CallWorkspaceReservesPerThreadTiles) {
  kernels::CallWorkspace<double> ws;
  ws.reserve(/*k_size=*/500, /*v_size=*/0, /*threads=*/3, /*block_rows=*/32, /*block_cols=*/16, 24,
             32);
  ASSERT_EQ(ws.per_thread.size(), 3U);
  EXPECT_GE(ws.k_packed.size(), 500);
  for (const auto& t : ws.per_thread) {
    EXPECT_GE(t.q_tile.size(), 32 * 24);
    EXPECT_GE(t.scores.size(), 32 * 16);
    EXPECT_GE(t.o_acc.size(), 32 * 32);
  }
  const double* const scores = ws.per_thread[2].scores.data();
  ws.reserve(100, 0, 2, 32, 16, 8, 8);
  EXPECT_EQ(ws.per_thread.size(), 3U);
  EXPECT_EQ(ws.per_thread[2].scores.data(), scores);
}

TEST(KernelWorkspace, DecodeBuffersHoldEveryPart) {
  kernels::DecodeBuffers<float> b;
  // 4 groups x 3 chunks of 8 padded rows, d = 16, d_v = 8, jobs of 2 groups, chunks of 256 keys.
  b.reserve(4, 3, 2, 8, 16, 8, 256, 2);
  EXPECT_GE(b.q_rows.size(), 4 * 8 * 16);
  EXPECT_GE(b.partial_o.size(), 4 * 3 * 8 * 8);
  EXPECT_GE(static_cast<Index>(b.partial_state.size()), 4 * 3 * 8);
  ASSERT_EQ(b.scores.size(), 2U);
  EXPECT_GE(b.scores[1].size(), 2 * 8 * 256);
}

TEST(KernelWorkspace, BackwardThreadWorkspaceKeepsTheCapDerivativeOnlyWhenAsked) {
  kernels::BackwardThreadWorkspace<float> t;
  t.reserve(32, 128, 16, 8, false);
  EXPECT_GE(t.p.size(), 32 * 128);
  EXPECT_GE(t.ds.size(), 32 * 128);
  EXPECT_GE(t.dk_acc.size(), 128 * 16);
  EXPECT_GE(t.dv_acc.size(), 128 * 8);
  EXPECT_EQ(t.softcap_derivative.size(), 0);
  t.reserve(32, 128, 16, 8, true);
  EXPECT_GE(t.softcap_derivative.size(), 32 * 128);
}

// Buffers are aligned for the kernels' aligned vector loads.
TEST(KernelWorkspace, BuffersAreAlignedToThePacketSize) {
  attention::AttentionWorkspace<float> workspace;
  auto& buffers = workspace.buffers();
  buffers.reserve(64, 64, 1, 32, 16, 8, 8);
  const auto address = reinterpret_cast<std::uintptr_t>(buffers.per_thread[0].scores.data());
  EXPECT_EQ(address % EIGEN_MAX_ALIGN_BYTES, 0U);
}

// Buffers of huge_page_bytes or more start on a huge-page boundary (so that the whole buffer can
// be offered as transparent huge pages), smaller ones on a cache line; every entry is usable, and
// a buffer that moves between the two sizes frees each allocation with its own alignment (the
// sanitizer build checks the pairing).
TEST(KernelWorkspace, LargeBuffersStartOnAHugePageBoundary) {
  const auto offset = [](const float* p, std::size_t alignment) {
    return reinterpret_cast<std::uintptr_t>(p) % alignment;
  };
  const Index large = static_cast<Index>(kernels::huge_page_bytes / sizeof(float)) + 1;
  kernels::Buffer<float> b(large);
  EXPECT_EQ(offset(b.data(), kernels::huge_page_bytes), 0U);
  b(0) = 1.0F;
  b(large - 1) = 2.0F;
  EXPECT_EQ(b(0) + b(large - 1), 3.0F);
  b.resize(64);
  EXPECT_EQ(offset(b.data(), kernels::buffer_alignment), 0U);
  b(63) = 4.0F;
  EXPECT_EQ(b(63), 4.0F);
  b.resize(2 * large);
  EXPECT_EQ(offset(b.data(), kernels::huge_page_bytes), 0U);
  b(2 * large - 1) = 5.0F;
  const kernels::Buffer<float> copy(b);
  EXPECT_EQ(copy.size(), 2 * large);
  EXPECT_EQ(offset(copy.data(), kernels::huge_page_bytes), 0U);
  EXPECT_EQ(copy(2 * large - 1), 5.0F);
}

}  // namespace
