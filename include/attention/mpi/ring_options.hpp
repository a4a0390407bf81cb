#pragma once
// SPDX-License-Identifier: MIT
//
// The settings of a ring attention call (<attention/mpi.hpp>) and what it reports back.

#include <cstdint>

#include "attention/mpi/ring_schedule.hpp"

namespace attention::mpi {

/// What one ring call did on this rank (RingOptions::stats), for profiling and the benchmark.
struct RingStats {
  std::int64_t bytes_sent = 0;       ///< K/V blocks sent (and dK/dV accumulators, backward)
  std::int64_t blocks_computed = 0;  ///< key/value blocks this rank's queries attended to
  std::int64_t blocks_skipped = 0;   ///< blocks wholly hidden by the causal mask: no work
  double seconds_total = 0;          ///< wall time of the call, checks included
  double seconds_computing = 0;      ///< in the attention kernels and the merges
  double seconds_waiting = 0;        ///< blocked on transfers: communication not hidden
};

/// How ring attention lays out and runs the sequence.
struct RingOptions {
  /// Which rows each rank holds (ring_schedule.hpp): contiguous shards, or zigzag (two chunks per
  /// rank, which balances causal work).
  Layout layout = Layout::contiguous;
  /// If set, receives this rank's RingStats for the call (overwritten).
  RingStats* stats = nullptr;
};
}  // namespace attention::mpi
