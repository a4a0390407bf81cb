#pragma once
// SPDX-License-Identifier: MIT
//
// The forward of ring attention (<attention/mpi.hpp>): the key/value blocks travel the ring while
// each rank attends to the block it holds and merges the result into its rows (partial.hpp).

#include <Eigen/Core>
#include <exception>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention/mask.hpp"
#include "attention/mpi/collective_check.hpp"
#include "attention/mpi/communication.hpp"
#include "attention/mpi/ring_options.hpp"
#include "attention/mpi/ring_schedule.hpp"
#include "attention/options.hpp"
#include "attention/partial.hpp"
#include "attention/types.hpp"

namespace attention::mpi::detail {

/// Query rows per kernel call. Between calls the ring lets MPI progress the block in flight
/// (MPI_Testall), which implementations without a progress thread need for the transfer to
/// overlap the computation. Each call packs its keys afresh (S x d copies per piece, against the
/// piece's rows x S x d multiply-adds), so pieces must not be too small.
constexpr Index piece_rows = 512;

/// The travelling key/value blocks. At step s this rank holds the block of rank
/// (rank - s) mod P in one pair of buffers while the next block arrives in the other: start(s)
/// sends the current block to the next rank and receives the following one from the previous
/// rank, finish(s) waits for both.
template <typename Scalar>
class KeyValueRing {
 public:
  KeyValueRing(const Communicator& comm, std::vector<Index> k_rows, const ConstMatrixRef<Scalar>& k,
               const ConstMatrixRef<Scalar>& v, RingStats& stats)
      : comm_(comm),
        k_rows_(std::move(k_rows)),
        k_row_(mpi_scalar_type<Scalar>(), k.cols()),
        v_row_(mpi_scalar_type<Scalar>(), v.cols()),
        stats_(stats) {
    Index max_rows = 0;
    for (Index rows : k_rows_) max_rows = std::max(max_rows, rows);
    for (int b = 0; b < (comm.size() > 1 ? 2 : 1); ++b) {
      k_[b].resize(max_rows, k.cols());
      v_[b].resize(max_rows, v.cols());
    }
    // The own block goes into a buffer: it is sent from there and has contiguous rows.
    k_[0].topRows(k.rows()) = k;
    v_[0].topRows(v.rows()) = v;
  }

  /// The rank whose block this rank holds at `step`.
  [[nodiscard]] int owner(int step) const {
    return (comm_.rank() - step % comm_.size() + comm_.size()) % comm_.size();
  }
  [[nodiscard]] Index rows(int step) const {
    return k_rows_[static_cast<std::size_t>(owner(step))];
  }
  [[nodiscard]] auto k(int step) const { return k_[step % 2].topRows(rows(step)); }
  [[nodiscard]] auto v(int step) const { return v_[step % 2].topRows(rows(step)); }

  void start(int step) {
    if (step + 1 >= comm_.size()) return;
    const int current = step % 2, next = 1 - current;
    const int incoming = static_cast<int>(rows(step + 1)), outgoing = static_cast<int>(rows(step));
    check_mpi(MPI_Irecv(k_[next].data(), incoming, k_row_.get(), comm_.previous(), tag_k,
                        comm_.get(), requests_.add()),
              "MPI_Irecv");
    check_mpi(MPI_Irecv(v_[next].data(), incoming, v_row_.get(), comm_.previous(), tag_v,
                        comm_.get(), requests_.add()),
              "MPI_Irecv");
    check_mpi(MPI_Isend(k_[current].data(), outgoing, k_row_.get(), comm_.next(), tag_k,
                        comm_.get(), requests_.add()),
              "MPI_Isend");
    check_mpi(MPI_Isend(v_[current].data(), outgoing, v_row_.get(), comm_.next(), tag_v,
                        comm_.get(), requests_.add()),
              "MPI_Isend");
    stats_.bytes_sent += static_cast<std::int64_t>(
        outgoing * (k_[current].cols() + v_[current].cols()) * Index(sizeof(Scalar)));
  }
  void poll() { requests_.poll(); }
  void finish() { requests_.wait(&stats_.seconds_waiting); }

  static constexpr int tag_k = 1, tag_v = 2;

 private:
  const Communicator& comm_;
  std::vector<Index> k_rows_;
  RowType k_row_, v_row_;
  RingStats& stats_;
  Matrix<Scalar> k_[2], v_[2];
  Requests<4> requests_;
};

/// The compile-time rules of every ring entry point: one scalar type, float or double, and a mask
/// the ring can apply over global positions.
template <typename Mask, typename Derived, typename... Others>
constexpr void check_ring_types() {
  using Scalar = typename Derived::Scalar;
  static_assert((std::is_same_v<Scalar, typename Others::Scalar> && ...),
                "attention::mpi: every matrix argument must have the same scalar type (use "
                ".cast<T>() on one)");
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>,
                "attention::mpi: ring attention is for float and double");
  static_assert(std::is_same_v<Mask, NoMask> || std::is_same_v<Mask, CausalMask>,
                "attention::mpi: ring attention supports NoMask and attention::causal (over the "
                "global positions) only; other masks would need the whole sequence on each rank");
}

/// Runs `call` with the mask object `c.mask` names.
template <typename Function>
void with_mask(CallMask mask, Function&& call) {
  if (mask == CallMask::none) {
    call(NoMask{});
  } else {
    call(causal_lower_right);
  }
}

/// acc's rows [row0, row0 + part rows) become their merge with `part` (partial.hpp).
template <typename Scalar>
void merge_rows(PartialAttention<Scalar>& acc, Index row0, const PartialAttention<Scalar>& part) {
  const Index rows = part.output.rows();
  const PartialAttention<Scalar> current{acc.output.middleRows(row0, rows),
                                         acc.lse.segment(row0, rows)};
  const PartialAttention<Scalar> merged = merge(current, part);
  acc.output.middleRows(row0, rows) = merged.output;
  acc.lse.segment(row0, rows) = merged.lse;
}

template <typename Scalar, typename Mask>
PartialAttention<Scalar> ring_forward(const char* func, MPI_Comm user_comm,
                                      const ConstMatrixRef<Scalar>& q,
                                      const ConstMatrixRef<Scalar>& k,
                                      const ConstMatrixRef<Scalar>& v, const Options& options,
                                      const RingOptions& ring_options) {
  const double start = MPI_Wtime();
  constexpr bool causal = std::is_same_v<Mask, CausalMask>;
  RingStats stats;
  Communicator comm(func, user_comm);
  std::string options_error;
  const Summary mine = summarize<Scalar>(CallKind::forward, causal, ring_options.layout, q, k, v,
                                         options, options_error);
  const std::vector<Summary> all = exchange_and_check(func, comm, mine, options_error);

  // From here on the other ranks send and wait: a failure can only abort (see the top).
  PartialAttention<Scalar> acc;
  try {
    acc.output.setZero(q.rows(), v.cols());
    acc.lse.setConstant(q.rows(), -std::numeric_limits<Scalar>::infinity());
    const std::vector<Index> q_rows_all = rows_per_rank(all, q_rows);
    const std::vector<Index> k_rows_all = rows_per_rank(all, k_rows);
    const Shard q_shard = shard_of(ring_options.layout, comm.rank(), q_rows_all);
    KeyValueRing<Scalar> ring(comm, k_rows_all, k, v, stats);
    for (int step = 0; step < comm.size(); ++step) {
      ring.start(step);
      const Shard k_shard = shard_of(ring_options.layout, ring.owner(step), k_rows_all);
      const std::vector<Call> calls = plan_block(q_shard, k_shard, causal, piece_rows);
      const double compute_start = MPI_Wtime();
      for (const Call& c : calls) {
        with_mask(c.mask, [&](const auto& mask) {
          merge_rows(acc, c.q_begin,
                     scaled_dot_product_attention_lse(q.middleRows(c.q_begin, c.q_rows),
                                                      ring.k(step).middleRows(c.k_begin, c.k_rows),
                                                      ring.v(step).middleRows(c.k_begin, c.k_rows),
                                                      mask, options));
        });
        ring.poll();
      }
      stats.seconds_computing += MPI_Wtime() - compute_start;
      (calls.empty() ? stats.blocks_skipped : stats.blocks_computed) += 1;
      ring.finish();
    }
  } catch (const std::exception& e) {
    abort_ring(comm, func, e.what());
  }
  stats.seconds_total = MPI_Wtime() - start;
  if (ring_options.stats != nullptr) *ring_options.stats = stats;
  return acc;
}

}  // namespace attention::mpi::detail
