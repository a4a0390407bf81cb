// SPDX-License-Identifier: MIT
//
// Tests for attention/mpi.hpp, ring attention over MPI, run by ctest under mpirun with 1, 2, 3 and
// 4 ranks. Every rank builds the same global Q, K, V (and dO) from the seeds, passes its own rows
// to the ring, and compares the rows it gets back with the same rows of the single-process call on
// the whole matrices: forward, lse and backward, both layouts, uneven and one-row shards, causal
// and not, float and double. The same executable, ring_attention_test, holds the tests of
// mpi/ring_options.hpp (what RingStats reports, tests/mpi/ring_options_test.cpp) and of
// mpi/collective_check.hpp (one rank's bad argument makes every rank throw, and nobody hangs:
// tests/mpi/collective_check_test.cpp); this file has its main().
//
// Every rank runs every test in the same order, so the collective calls inside them match. A test
// must therefore not return early on one rank only (no ASSERT_* before a ring call).

#include <gtest/gtest.h>
#include <mpi.h>

#include <attention/attention.hpp>
#include <attention/mpi.hpp>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"
#include "support/ring.hpp"

namespace {

using attention::Index;
using attention::mpi::Layout;
using attention::mpi::RingOptions;
using support::ring::held_rows;
using support::ring::Matrix;
using support::ring::one_row_sizes;
using support::ring::sizes_by_rank;
using support::ring::take_entries;
using support::ring::take_rows;
using support::ring::total;
using support::ring::uneven_sizes;
using support::ring::Vector;
using support::ring::world_rank;
using support::ring::world_size;
using support::ring::zigzag_sizes;

// --- Tolerances, from the kernel's documented rounding
// -------------------------------------------- |ring - single| <= |ring - exact| + |single -
// exact|. The single-process call is one kernel call; the ring makes one per (query piece, key
// block) and merges them. For inputs of order 1:
//  * forward output: each kernel call is within support::tolerance<Scalar>() of the exact result
//    (the library's measured bound: 2e-6 float, 5e-15 double), so the two sides differ by at most
//    twice that, plus the merges' rounding: a merge rounds an entry about 4 times (two weights from
//    exp, a product and a sum), at most 2P + 1 merges reach a row.
//  * lse: the same bound relative to |lse| (of order log S here), as lse = m + log(l) rounds with
//    the size of its terms.
//  * backward: the tiled backward's documented bound against the materialising one, relative to
//    max(1, max |gradient|) (tests/kernels/flash_backward_test.cpp: 5e-5 float, 2e-13 double),
//    for each side; the ring adds P partial sums per gradient row, P rounding steps.

template <typename Scalar>
long double forward_tolerance(int ranks) {
  constexpr long double eps = std::numeric_limits<Scalar>::epsilon();
  return 2 * support::tolerance<Scalar>() + (2 * ranks + 1) * 4 * eps;
}

template <typename Scalar>
long double backward_tolerance(int ranks) {
  constexpr long double eps = std::numeric_limits<Scalar>::epsilon();
  constexpr long double kernel = std::is_same_v<Scalar, float> ? 5e-5L : 2e-13L;
  return 2 * kernel + ranks * eps;
}

template <typename Derived>
long double size_of(const Eigen::MatrixBase<Derived>& m) {
  long double size = 1;
  for (Index i = 0; i < m.size(); ++i) {
    size = std::max(size, std::fabs(static_cast<long double>(m.reshaped()(i))));
  }
  return size;
}

// --- Runs: the ring on each rank's rows against the single process on the whole -----------------

/// A test problem: global sizes per rank (q and k/v may differ for NoMask), widths and seeds.
struct Problem {
  std::vector<Index> q_sizes;
  std::vector<Index> k_sizes;
  Index d_k = 24;
  Index d_v = 20;
  unsigned seed = 1;
};

template <typename Scalar, typename Mask>
void expect_forward_matches(const Problem& p, Layout layout, const Mask& mask,
                            const attention::Options& options = {}) {
  const int rank = world_rank(), ranks = world_size();
  const Matrix<Scalar> q = support::random_matrix<Scalar>(total(p.q_sizes), p.d_k, p.seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(total(p.k_sizes), p.d_k, p.seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(total(p.k_sizes), p.d_v, p.seed + 2);
  const std::vector<Index> q_rows = held_rows(layout, rank, p.q_sizes);
  const std::vector<Index> k_rows = held_rows(layout, rank, p.k_sizes);

  const auto ring =
      attention::mpi::ring_attention_lse(MPI_COMM_WORLD, take_rows(q, q_rows), take_rows(k, k_rows),
                                         take_rows(v, k_rows), mask, options, RingOptions{layout});
  const Matrix<Scalar> ring_out =
      attention::mpi::ring_attention(MPI_COMM_WORLD, take_rows(q, q_rows), take_rows(k, k_rows),
                                     take_rows(v, k_rows), mask, options, RingOptions{layout});
  const auto single = attention::scaled_dot_product_attention_lse(q, k, v, mask, options);

  const Matrix<Scalar> expected = take_rows(single.output, q_rows);
  const Vector<Scalar> expected_lse = take_entries(single.lse, q_rows);
  const long double tol = forward_tolerance<Scalar>(ranks);
  EXPECT_TRUE(support::is_near(ring.output, expected, tol)) << "rank " << rank << ": output";
  EXPECT_TRUE(support::is_near(ring.lse, expected_lse, tol * size_of(expected_lse)))
      << "rank " << rank << ": lse";
  // ring_attention is ring_attention_lse's output, bit for bit.
  EXPECT_TRUE(support::is_near(ring_out, ring.output, 0)) << "rank " << rank;
}

template <typename Scalar, typename Mask>
void expect_backward_matches(const Problem& p, Layout layout, const Mask& mask,
                             const attention::Options& options = {}) {
  const int rank = world_rank(), ranks = world_size();
  const Matrix<Scalar> q = support::random_matrix<Scalar>(total(p.q_sizes), p.d_k, p.seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(total(p.k_sizes), p.d_k, p.seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(total(p.k_sizes), p.d_v, p.seed + 2);
  const Matrix<Scalar> d_out = support::random_matrix<Scalar>(total(p.q_sizes), p.d_v, p.seed + 3);
  const std::vector<Index> q_rows = held_rows(layout, rank, p.q_sizes);
  const std::vector<Index> k_rows = held_rows(layout, rank, p.k_sizes);

  // The forward's saved results of the whole sequence, as a training step would keep them.
  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask, options);
  const auto ring = attention::mpi::ring_attention_backward(
      MPI_COMM_WORLD, take_rows(q, q_rows), take_rows(k, k_rows), take_rows(v, k_rows),
      take_rows(forward.output, q_rows), take_entries(forward.lse, q_rows),
      take_rows(d_out, q_rows), mask, options, RingOptions{layout});
  const auto single = attention::scaled_dot_product_attention_backward(
      q, k, v, forward.output, forward.lse, d_out, mask, options);

  const long double tol = backward_tolerance<Scalar>(ranks);
  const Matrix<Scalar> dq = take_rows(single.dq, q_rows), dk = take_rows(single.dk, k_rows),
                       dv = take_rows(single.dv, k_rows);
  EXPECT_TRUE(support::is_near(ring.dq, dq, tol * size_of(single.dq))) << "rank " << rank << ": dq";
  EXPECT_TRUE(support::is_near(ring.dk, dk, tol * size_of(single.dk))) << "rank " << rank << ": dk";
  EXPECT_TRUE(support::is_near(ring.dv, dv, tol * size_of(single.dv))) << "rank " << rank << ": dv";
  EXPECT_EQ(ring.dbias.size(), 0);
}

template <typename Scalar>
class RingAttention : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(RingAttention, Scalars, support::ScalarNames);

TYPED_TEST(RingAttention, CausalContiguousUnevenShards) {
  const Problem p{uneven_sizes(), uneven_sizes(), 24, 20, 10};
  expect_forward_matches<TypeParam>(p, Layout::contiguous, attention::causal);
  expect_backward_matches<TypeParam>(p, Layout::contiguous, attention::causal);
}

TYPED_TEST(RingAttention, CausalContiguousOneRowShard) {
  const Problem p{one_row_sizes(), one_row_sizes(), 16, 16, 20};
  expect_forward_matches<TypeParam>(p, Layout::contiguous, attention::causal);
  expect_backward_matches<TypeParam>(p, Layout::contiguous, attention::causal);
}

TYPED_TEST(RingAttention, CausalZigzag) {
  const Problem p{zigzag_sizes(), zigzag_sizes(), 24, 20, 30};
  expect_forward_matches<TypeParam>(p, Layout::zigzag, attention::causal);
  expect_backward_matches<TypeParam>(p, Layout::zigzag, attention::causal);
}

// Cross-attention: query and key/value shards of different, uneven lengths.
TYPED_TEST(RingAttention, NoMaskContiguousCrossAttention) {
  const std::vector<Index> k_sizes =
      sizes_by_rank([](Index r) { return 50 + 11 * (world_size() - 1 - r); });
  const Problem p{uneven_sizes(), k_sizes, 24, 20, 40};
  expect_forward_matches<TypeParam>(p, Layout::contiguous, attention::NoMask{});
  expect_backward_matches<TypeParam>(p, Layout::contiguous, attention::NoMask{});
}

TYPED_TEST(RingAttention, NoMaskOneRowShard) {
  const Problem p{one_row_sizes(), uneven_sizes(), 16, 8, 50};
  expect_forward_matches<TypeParam>(p, Layout::contiguous, attention::NoMask{});
  expect_backward_matches<TypeParam>(p, Layout::contiguous, attention::NoMask{});
}

TYPED_TEST(RingAttention, NoMaskZigzag) {
  const Problem p{zigzag_sizes(), std::vector<Index>(std::size_t(world_size()), 40), 24, 20, 60};
  expect_forward_matches<TypeParam>(p, Layout::zigzag, attention::NoMask{});
  expect_backward_matches<TypeParam>(p, Layout::zigzag, attention::NoMask{});
}

// Options reach every kernel call: a scale and Gemma 2's soft-cap.
TYPED_TEST(RingAttention, ScaleAndSoftcap) {
  attention::Options options;
  options.scale = 0.3;
  options.softcap = 2.0;
  const Problem p{zigzag_sizes(), zigzag_sizes(), 16, 12, 70};
  expect_forward_matches<TypeParam>(p, Layout::zigzag, attention::causal, options);
  expect_backward_matches<TypeParam>(p, Layout::zigzag, attention::causal, options);
}

// Shards longer than the ring's pieces of detail::piece_rows queries per kernel call: the pieces
// of the causal staircase see a trimmed key range (attention/mpi/ring_schedule.hpp).
TYPED_TEST(RingAttention, ShardsLongerThanOnePiece) {
  const std::vector<Index> sizes =
      sizes_by_rank([](Index r) { return attention::mpi::detail::piece_rows + 44 + 7 * r; });
  const Problem p{sizes, sizes, 8, 8, 80};
  expect_forward_matches<TypeParam>(p, Layout::contiguous, attention::causal);
  expect_backward_matches<TypeParam>(p, Layout::contiguous, attention::causal);
}

// Inputs as Eigen expressions: column-major copies, blocks of wider matrices, products.
TYPED_TEST(RingAttention, AcceptsExpressions) {
  using T = TypeParam;
  const int rank = world_rank();
  const std::vector<Index> sizes = zigzag_sizes();
  const Matrix<T> x = support::random_matrix<T>(total(sizes), 48, 90);
  const std::vector<Index> rows = held_rows(Layout::zigzag, rank, sizes);
  const Matrix<T> mine = take_rows(x, rows);
  const Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> q_col_major = mine.leftCols(16);
  const auto out = attention::mpi::ring_attention(
      MPI_COMM_WORLD, q_col_major, mine.middleCols(16, 16), mine.rightCols(16) * T(2),
      attention::causal, {}, {Layout::zigzag});
  const Matrix<T> q = x.leftCols(16), k = x.middleCols(16, 16), v = x.rightCols(16) * T(2);
  const Matrix<T> expected =
      take_rows(attention::scaled_dot_product_attention(q, k, v, attention::causal), rows);
  EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<T>(world_size())));
}

// A NaN in one key (global position j = N / 2 + 3) reaches exactly the queries that see it, as in
// the single process: positions >= j with the causal mask.
TYPED_TEST(RingAttention, NaNInAKeyReachesOnlyTheQueriesThatSeeIt) {
  using T = TypeParam;
  const int rank = world_rank();
  const std::vector<Index> sizes = zigzag_sizes();
  const Matrix<T> q = support::random_matrix<T>(total(sizes), 8, 100);
  Matrix<T> k = support::random_matrix<T>(total(sizes), 8, 101);
  const Matrix<T> v = support::random_matrix<T>(total(sizes), 8, 102);
  const Index j = total(sizes) / 2 + 3;
  k(j, 3) = std::numeric_limits<T>::quiet_NaN();
  const std::vector<Index> rows = held_rows(Layout::zigzag, rank, sizes);
  const Matrix<T> out =
      attention::mpi::ring_attention(MPI_COMM_WORLD, take_rows(q, rows), take_rows(k, rows),
                                     take_rows(v, rows), attention::causal, {}, {Layout::zigzag});
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const bool sees_nan = rows[i] >= j;
    EXPECT_EQ(out.row(static_cast<Index>(i)).array().isNaN().all(), sees_nan)
        << "rank " << rank << ", position " << rows[i];
    if (!sees_nan) {
      EXPECT_TRUE(out.row(static_cast<Index>(i)).allFinite());
    }
  }
  const Matrix<T> expected =
      take_rows(attention::scaled_dot_product_attention(q, k, v, attention::causal), rows);
  EXPECT_TRUE(support::is_near(out, expected, forward_tolerance<T>(world_size())));
}

/// On ranks other than 0, prints only failures, each tagged with the rank (rank 0 keeps
/// GoogleTest's usual output).
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "?", result.line_number(),
                 result.summary());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
    }
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  const int rank = world_rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new FailurePrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  // Fail on every rank if any failed, so that mpirun's exit code and rank 0's summary agree.
  int worst = 0;
  MPI_Allreduce(&result, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && worst != result) {
    std::fprintf(stderr, "ring_attention_test: tests failed on other ranks (see [rank N] lines)\n");
  }
  MPI_Finalize();
  return worst;
}
