#pragma once
// SPDX-License-Identifier: MIT
//
// The backward of ring attention (<attention/mpi.hpp>): each key/value block travels the ring
// with its dK and dV sums, every rank adding its queries' share, until they arrive back home.

#include <Eigen/Core>
#include <exception>
#include <utility>
#include <vector>

#include "attention/detail/row_math.hpp"
#include "attention/mpi/collective_check.hpp"
#include "attention/mpi/communication.hpp"
#include "attention/mpi/ring_forward.hpp"
#include "attention/mpi/ring_options.hpp"
#include "attention/mpi/ring_schedule.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention::mpi::detail {

/// The dK/dV accumulators that travel with the key/value blocks in the backward. At step s this
/// rank adds its contribution to the sums for the block of rank (rank - s) mod P, which arrived
/// from the previous rank (at step 0: its own block, starting from zero), and passes them on to
/// the next; after P steps each block's sums have visited every rank and come home.
template <typename Scalar>
class GradientRing {
 public:
  GradientRing(const Communicator& comm, std::vector<Index> k_rows, Index d_k, Index d_v,
               RingStats& stats)
      : comm_(comm),
        k_rows_(std::move(k_rows)),
        k_row_(mpi_scalar_type<Scalar>(), d_k),
        v_row_(mpi_scalar_type<Scalar>(), d_v),
        stats_(stats) {
    Index max_rows = 0;
    for (Index rows : k_rows_) max_rows = std::max(max_rows, rows);
    for (int b = 0; b < (comm.size() > 1 ? 2 : 1); ++b) {
      dk_[b].resize(max_rows, d_k);
      dv_[b].resize(max_rows, d_v);
    }
  }

  /// Adds dk_step, dv_step (this rank's contribution to the block of `step`) to the sums, sends
  /// them on, and posts the receive of the sums for the block of step + 1.
  void add_and_pass(int step, const Matrix<Scalar>& dk_step, const Matrix<Scalar>& dv_step) {
    const int ranks = comm_.size(), b = step % 2;
    const Index rows = rows_of(step);
    if (step == 0) {
      dk_[b].topRows(rows) = dk_step.topRows(rows);
      dv_[b].topRows(rows) = dv_step.topRows(rows);
    } else {
      received_[b].wait(&stats_.seconds_waiting);
      dk_[b].topRows(rows) += dk_step.topRows(rows);
      dv_[b].topRows(rows) += dv_step.topRows(rows);
    }
    if (ranks == 1) return;
    // After the last step the next rank is the block's owner.
    check_mpi(MPI_Isend(dk_[b].data(), static_cast<int>(rows), k_row_.get(), comm_.next(), tag_dk,
                        comm_.get(), sent_[b].add()),
              "MPI_Isend");
    check_mpi(MPI_Isend(dv_[b].data(), static_cast<int>(rows), v_row_.get(), comm_.next(), tag_dv,
                        comm_.get(), sent_[b].add()),
              "MPI_Isend");
    stats_.bytes_sent +=
        static_cast<std::int64_t>(rows * (dk_[b].cols() + dv_[b].cols()) * Index(sizeof(Scalar)));
    // The other buffer's sums went out one step ago; once sent, it takes the next block's.
    const int other = 1 - b;
    sent_[other].wait(&stats_.seconds_waiting);
    const int incoming = static_cast<int>(rows_of(step + 1));
    check_mpi(MPI_Irecv(dk_[other].data(), incoming, k_row_.get(), comm_.previous(), tag_dk,
                        comm_.get(), received_[other].add()),
              "MPI_Irecv");
    check_mpi(MPI_Irecv(dv_[other].data(), incoming, v_row_.get(), comm_.previous(), tag_dv,
                        comm_.get(), received_[other].add()),
              "MPI_Irecv");
  }

  void poll() {
    for (auto& r : received_) r.poll();
    for (auto& r : sent_) r.poll();
  }

  /// After the last step: waits for this rank's own block's sums and returns them.
  void finish(Matrix<Scalar>& dk, Matrix<Scalar>& dv) {
    const int ranks = comm_.size();
    const int home = ranks == 1 ? 0 : ranks % 2;  // the buffer step P receives into
    for (auto& r : received_) r.wait(&stats_.seconds_waiting);
    for (auto& r : sent_) r.wait(&stats_.seconds_waiting);
    const Index rows = rows_of(0);
    dk = dk_[home].topRows(rows);
    dv = dv_[home].topRows(rows);
  }

  static constexpr int tag_dk = 3, tag_dv = 4;

 private:
  /// Rows of the block this rank holds at `step` (step P: its own again).
  [[nodiscard]] Index rows_of(int step) const {
    const int ranks = comm_.size();
    return k_rows_[static_cast<std::size_t>((comm_.rank() - step % ranks + ranks) % ranks)];
  }

  const Communicator& comm_;
  std::vector<Index> k_rows_;
  RowType k_row_, v_row_;
  RingStats& stats_;
  Matrix<Scalar> dk_[2], dv_[2];
  Requests<2> sent_[2], received_[2];
};

template <typename Scalar, typename Mask>
AttentionGradients<Scalar> ring_backward(
    const char* func, MPI_Comm user_comm, const ConstMatrixRef<Scalar>& q,
    const ConstMatrixRef<Scalar>& k, const ConstMatrixRef<Scalar>& v,
    const ConstMatrixRef<Scalar>& out, const Eigen::Matrix<Scalar, Eigen::Dynamic, 1>& lse,
    const ConstMatrixRef<Scalar>& d_out, const Options& options, const RingOptions& ring_options) {
  const double start = MPI_Wtime();
  constexpr bool causal = std::is_same_v<Mask, CausalMask>;
  RingStats stats;
  Communicator comm(func, user_comm);
  std::string options_error;
  Summary mine = summarize<Scalar>(CallKind::backward, causal, ring_options.layout, q, k, v,
                                   options, options_error);
  mine[out_rows] = out.rows();
  mine[out_cols] = out.cols();
  mine[lse_size] = lse.size();
  mine[d_out_rows] = d_out.rows();
  mine[d_out_cols] = d_out.cols();
  const bool finite[] = {attention::detail::all_finite(q),   attention::detail::all_finite(k),
                         attention::detail::all_finite(v),   attention::detail::all_finite(out),
                         attention::detail::all_finite(lse), attention::detail::all_finite(d_out)};
  for (int bit = 0; bit < 6; ++bit) {
    if (!finite[bit]) mine[non_finite] |= std::int64_t{1} << bit;
  }
  const std::vector<Summary> all = exchange_and_check(func, comm, mine, options_error);

  // From here on the other ranks send and wait: a failure can only abort (see the top).
  AttentionGradients<Scalar> grads;
  try {
    grads.dq.setZero(q.rows(), q.cols());
    const std::vector<Index> q_rows_all = rows_per_rank(all, q_rows);
    const std::vector<Index> k_rows_all = rows_per_rank(all, k_rows);
    const Shard q_shard = shard_of(ring_options.layout, comm.rank(), q_rows_all);
    KeyValueRing<Scalar> ring(comm, k_rows_all, k, v, stats);
    GradientRing<Scalar> sums(comm, k_rows_all, k.cols(), v.cols(), stats);
    Index max_rows = 0;
    for (Index rows : k_rows_all) max_rows = std::max(max_rows, rows);
    Matrix<Scalar> dk_step(max_rows, k.cols()), dv_step(max_rows, v.cols());
    AttentionGradients<Scalar> part;
    for (int step = 0; step < comm.size(); ++step) {
      ring.start(step);
      const Shard k_shard = shard_of(ring_options.layout, ring.owner(step), k_rows_all);
      const std::vector<Call> calls = plan_block(q_shard, k_shard, causal, piece_rows);
      const double compute_start = MPI_Wtime();
      dk_step.topRows(ring.rows(step)).setZero();
      dv_step.topRows(ring.rows(step)).setZero();
      for (const Call& c : calls) {
        // With the global out and lse, the lse overload recomputes this block's share of the
        // global softmax, P = exp(scale q k^T + mask - lse), and uses rowsum(dO ∘ O) of the whole
        // row: its dq, dk and dv are exactly this block's terms of the sums over all keys.
        with_mask(c.mask, [&](const auto& mask) {
          scaled_dot_product_attention_backward(
              q.middleRows(c.q_begin, c.q_rows), ring.k(step).middleRows(c.k_begin, c.k_rows),
              ring.v(step).middleRows(c.k_begin, c.k_rows), out.middleRows(c.q_begin, c.q_rows),
              lse.segment(c.q_begin, c.q_rows), d_out.middleRows(c.q_begin, c.q_rows), part, mask,
              options);
        });
        grads.dq.middleRows(c.q_begin, c.q_rows) += part.dq;
        dk_step.middleRows(c.k_begin, c.k_rows) += part.dk;
        dv_step.middleRows(c.k_begin, c.k_rows) += part.dv;
        ring.poll();
        sums.poll();
      }
      stats.seconds_computing += MPI_Wtime() - compute_start;
      (calls.empty() ? stats.blocks_skipped : stats.blocks_computed) += 1;
      sums.add_and_pass(step, dk_step, dv_step);
      ring.finish();
    }
    sums.finish(grads.dk, grads.dv);
  } catch (const std::exception& e) {
    abort_ring(comm, func, e.what());
  }
  stats.seconds_total = MPI_Wtime() - start;
  if (ring_options.stats != nullptr) *ring_options.stats = stats;
  return grads;
}
}  // namespace attention::mpi::detail
