// SPDX-License-Identifier: MIT
// Tests for attention/mpi/collective_check.hpp: a bad argument on any rank makes every rank throw
// the same error, naming the rank and the sizes, and none hangs; the ring works again right after.
// Part of ring_attention_test (tests/mpi_test.cpp has its main()), run on every rank.

#include <gtest/gtest.h>
#include <mpi.h>

#include <attention/attention.hpp>
#include <attention/mpi.hpp>
#include <limits>
#include <stdexcept>
#include <string>

#include "support/random.hpp"
#include "support/ring.hpp"

namespace {

using attention::Index;
using attention::mpi::Layout;
using support::ring::expect_ring_still_works;
using support::ring::Matrix;
using support::ring::message_on_every_rank;
using support::ring::Vector;
using support::ring::world_rank;
using support::ring::world_size;

// The case: the last rank passes d_k = 12 where the others pass 16 (with one rank, its k
// disagrees with its own q instead).
TEST(RingAttentionErrors, OneRankWithAnotherDkThrowsEverywhere) {
  const int rank = world_rank(), ranks = world_size();
  const bool odd_one = rank == ranks - 1;
  const Matrix<float> q = support::random_matrix<float>(5, ranks > 1 && odd_one ? 12 : 16, 1);
  const Matrix<float> k = support::random_matrix<float>(5, odd_one ? 12 : 16, 2);
  const std::string message = message_on_every_rank<attention::ShapeError>(
      [&] { (void)attention::mpi::ring_attention(MPI_COMM_WORLD, q, k, k); });
  const std::string expected =
      ranks > 1 ? "attention::mpi::ring_attention: rank " + std::to_string(ranks - 1) +
                      "'s q_local.cols() (d_k) (= 12) must equal rank 0's (= 16)"
                : "attention::mpi::ring_attention: rank 0's k_local.cols() (= 12) must equal its "
                  "q_local.cols() (= 16)";
  EXPECT_EQ(message, expected);
  expect_ring_still_works();
}

TEST(RingAttentionErrors, ZigzagNeedsNAMultipleOf2P) {
  const int ranks = world_size();
  const Matrix<float> x = support::random_matrix<float>(3, 4, 3);  // N = 3P
  const std::string message = message_on_every_rank<attention::ShapeError>([&] {
    (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x, attention::causal, {},
                                         {Layout::zigzag});
  });
  EXPECT_NE(
      message.find("Layout::zigzag cuts the sequence into 2P (= " + std::to_string(2 * ranks) +
                   ") equal chunks, but its length N (= " + std::to_string(3 * ranks) +
                   ", the sum of q_local.rows() over the ranks)"),
      std::string::npos)
      << message;
  expect_ring_still_works();
}

// Rank 0 holds 6 rows and rank 1 holds 2 (the others 4): N = 4P divides by 2P, but the shards
// are not two chunks of N / 2P each.
TEST(RingAttentionErrors, ZigzagNeedsEqualShards) {
  const int rank = world_rank(), ranks = world_size();
  if (ranks < 2) GTEST_SKIP() << "needs two ranks";
  const Matrix<float> x = support::random_matrix<float>(rank == 0 ? 6 : rank == 1 ? 2 : 4, 4, 4);
  const std::string message = message_on_every_rank<attention::ShapeError>([&] {
    (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x, attention::causal, {},
                                         {Layout::zigzag});
  });
  EXPECT_NE(message.find("rank 0's q_local.rows() (= 6) must be two chunks of N / 2P rows"),
            std::string::npos)
      << message;
  expect_ring_still_works();
}

TEST(RingAttentionErrors, CausalNeedsQAndKShardsOfOneLength) {
  const int rank = world_rank(), ranks = world_size();
  const Matrix<float> q = support::random_matrix<float>(5, 4, 5);
  const Matrix<float> k = support::random_matrix<float>(rank == ranks - 1 ? 6 : 5, 4, 6);
  const std::string message = message_on_every_rank<attention::ShapeError>(
      [&] { (void)attention::mpi::ring_attention(MPI_COMM_WORLD, q, k, k, attention::causal); });
  EXPECT_NE(
      message.find("rank " + std::to_string(ranks - 1) + "'s k_local.rows() (= 6) must equal"),
      std::string::npos)
      << message;
  expect_ring_still_works();
}

TEST(RingAttentionErrors, BackwardShapesOfOutLseAndDOut) {
  const int rank = world_rank(), ranks = world_size();
  const Matrix<double> x = support::random_matrix<double>(5, 4, 8);
  const Matrix<double> out = support::random_matrix<double>(5, rank == 0 ? 3 : 4, 9);
  const Vector<double> lse = Vector<double>::Zero(rank == ranks - 1 ? 4 : 5);
  const std::string message = message_on_every_rank<attention::ShapeError>(
      [&] { (void)attention::mpi::ring_attention_backward(MPI_COMM_WORLD, x, x, x, out, lse, x); });
  EXPECT_EQ(message,
            "attention::mpi::ring_attention_backward: rank 0's out_local.cols() (= 3) must equal "
            "its v_local.cols() (= 4)");
  expect_ring_still_works();
}

TEST(RingAttentionErrors, BackwardRejectsANaNOnAnyRank) {
  const int rank = world_rank(), ranks = world_size();
  Matrix<double> x = support::random_matrix<double>(5, 4, 10);
  const auto forward = attention::mpi::ring_attention_lse(MPI_COMM_WORLD, x, x, x);
  Matrix<double> d_out = support::random_matrix<double>(5, 4, 11);
  if (rank == ranks - 1) d_out(2, 1) = std::numeric_limits<double>::quiet_NaN();
  const std::string message = message_on_every_rank<std::invalid_argument>([&] {
    (void)attention::mpi::ring_attention_backward(MPI_COMM_WORLD, x, x, x, forward.output,
                                                  forward.lse, d_out);
  });
  EXPECT_EQ(message, "attention::mpi::ring_attention_backward: rank " + std::to_string(ranks - 1) +
                         "'s d_out_local holds a NaN or an infinity; ring_attention_backward "
                         "needs finite inputs");
  expect_ring_still_works();
}

TEST(RingAttentionErrors, OptionsMustAgreeAndBeValid) {
  const int rank = world_rank(), ranks = world_size();
  const Matrix<float> x = support::random_matrix<float>(4, 4, 12);
  if (ranks > 1) {
    attention::Options options;
    if (rank == 1) options.scale = 0.5;
    const std::string message = message_on_every_rank<std::invalid_argument>(
        [&] { (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x, {}, options); });
    EXPECT_EQ(message,
              "attention::mpi::ring_attention: rank 1's options (scale = 0.5, softcap unset) "
              "differ from rank 0's (scale unset, softcap unset)");
  }
  attention::Options bad;
  bad.softcap = -1.0;
  const std::string message = message_on_every_rank<std::invalid_argument>(
      [&] { (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x, {}, bad); });
  EXPECT_EQ(message,
            "attention::mpi::ring_attention: options.softcap (= -1) must be positive and finite "
            "in the scalar type");
  expect_ring_still_works();
}

TEST(RingAttentionErrors, RanksMustAgreeOnMaskAndLayout) {
  const int rank = world_rank(), ranks = world_size();
  if (ranks < 2) GTEST_SKIP() << "needs two ranks";
  const Matrix<float> x = support::random_matrix<float>(4, 4, 13);
  std::string message = message_on_every_rank<std::invalid_argument>([&] {
    if (rank == 1) {
      (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x, attention::causal);
    } else {
      (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x);
    }
  });
  EXPECT_EQ(message,
            "attention::mpi::ring_attention: rank 1 passes attention::causal but rank 0 NoMask");
  message = message_on_every_rank<std::invalid_argument>([&] {
    (void)attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x, {}, {},
                                         {rank == 1 ? Layout::zigzag : Layout::contiguous});
  });
  EXPECT_EQ(message,
            "attention::mpi::ring_attention: rank 1 asks for Layout::zigzag but rank 0 for "
            "Layout::contiguous");
  expect_ring_still_works();
}

}  // namespace
