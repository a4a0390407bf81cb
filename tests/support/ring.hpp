#pragma once
// SPDX-License-Identifier: MIT
// Ring attention tests' helpers (tests/mpi_test.cpp and tests/mpi/*_test.cpp, one executable run
// under mpiexec): the world's rank and size, the global rows each rank holds under a layout written
// out from the layouts' definitions, the shard sizes the tests use, and the checks of an error
// thrown on every rank.

#include <gtest/gtest.h>
#include <mpi.h>

#include <attention/attention.hpp>
#include <attention/mpi.hpp>
#include <string>
#include <vector>

#include "support/messages.hpp"
#include "support/random.hpp"

namespace support::ring {

using attention::Index;
using attention::mpi::Layout;
template <typename Scalar>
using Matrix = attention::Matrix<Scalar>;
template <typename Scalar>
using Vector = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

inline int world_rank() {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

inline int world_size() {
  int size = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

/// The global rows rank `rank` holds when rank r holds sizes[r] rows, written out from the
/// layouts' definitions (independently of attention/mpi/ring_schedule.hpp).
inline std::vector<Index> held_rows(Layout layout, int rank, const std::vector<Index>& sizes) {
  std::vector<Index> rows;
  if (layout == Layout::contiguous) {
    Index begin = 0;
    for (int r = 0; r < rank; ++r) begin += sizes[static_cast<std::size_t>(r)];
    for (Index i = 0; i < sizes[static_cast<std::size_t>(rank)]; ++i) rows.push_back(begin + i);
  } else {
    // 2P chunks of c rows; rank r holds chunk r, then chunk 2P - 1 - r.
    const Index ranks = static_cast<Index>(sizes.size());
    const Index c = sizes[static_cast<std::size_t>(rank)] / 2;
    for (Index chunk : {Index(rank), 2 * ranks - 1 - rank}) {
      for (Index i = 0; i < c; ++i) rows.push_back(chunk * c + i);
    }
  }
  return rows;
}

template <typename Derived>
Matrix<typename Derived::Scalar> take_rows(const Eigen::MatrixBase<Derived>& m,
                                           const std::vector<Index>& rows) {
  Matrix<typename Derived::Scalar> out(static_cast<Index>(rows.size()), m.cols());
  for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Index>(i)) = m.row(rows[i]);
  return out;
}

template <typename Scalar>
Vector<Scalar> take_entries(const Vector<Scalar>& v, const std::vector<Index>& rows) {
  Vector<Scalar> out(static_cast<Index>(rows.size()));
  for (std::size_t i = 0; i < rows.size(); ++i) out(static_cast<Index>(i)) = v(rows[i]);
  return out;
}

inline Index total(const std::vector<Index>& sizes) {
  Index n = 0;
  for (Index s : sizes) n += s;
  return n;
}

/// Rows per rank: size(r) for r = 0 .. P - 1.
template <typename Size>
inline std::vector<Index> sizes_by_rank(Size size) {
  std::vector<Index> sizes(static_cast<std::size_t>(world_size()));
  for (std::size_t r = 0; r < sizes.size(); ++r) sizes[r] = size(static_cast<Index>(r));
  return sizes;
}

/// Uneven contiguous shards: 37, 66, 95, 124 rows (N = 322 with 4 ranks).
inline std::vector<Index> uneven_sizes() {
  return sizes_by_rank([](Index r) { return 37 + 29 * r; });
}

/// The middle rank holds a single row; the others 70 + 9r.
inline std::vector<Index> one_row_sizes() {
  return sizes_by_rank([](Index r) { return r == world_size() / 2 ? 1 : 70 + 9 * r; });
}

/// Zigzag: 2 chunks of 41 rows per rank (N = 328 with 4 ranks).
inline std::vector<Index> zigzag_sizes() {
  return std::vector<Index>(std::size_t(world_size()), 82);
}

/// Runs f, which must throw E on this rank; returns its message.
template <typename E, typename F>
std::string message_on_every_rank(F&& f) {
  std::string message = support::message_of<E>(f);
  EXPECT_FALSE(message.empty()) << "rank " << world_rank() << " did not throw";
  return message;
}

/// After an error, the ranks must still be in step: a correct call right after works everywhere.
inline void expect_ring_still_works() {
  const Matrix<float> x = support::random_matrix<float>(3, 4, 7 + unsigned(world_rank()));
  const Matrix<float> out = attention::mpi::ring_attention(MPI_COMM_WORLD, x, x, x);
  EXPECT_EQ(out.rows(), 3);
  EXPECT_TRUE(out.allFinite());
}

}  // namespace support::ring
