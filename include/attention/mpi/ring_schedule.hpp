#pragma once
// SPDX-License-Identifier: MIT
//
// Which rows of a sequence each rank of a ring holds, and which kernel calls one query shard makes
// against one key/value block: the bookkeeping of <attention/mpi.hpp>, kept apart from MPI so it
// can be read and tested on its own.
//
// Causal attention over global positions: query row i of a shard at global offset qo sees key row j
// of a block at global offset ko iff ko + j <= qo + i. Against one block of S keys, a run of query
// rows therefore splits into at most three parts, each an existing mask over a contiguous range:
//   rows with qo + i < ko                  see no key of the block: no call
//   rows with ko <= qo + i < ko + S        see keys 0 .. qo + i - ko: a staircase
//   rows with qo + i >= ko + S - 1         see every key: NoMask
// The staircase of rows [a, b) sees keys [0, qo + b - ko) at most, and its last row sees all of
// those, so it is causal_lower_right over exactly those keys (the top-left causal mask when the run
// starts on the block's first key). No new mask type is needed.

#include <Eigen/Core>
#include <algorithm>
#include <vector>

#include "attention/types.hpp"

namespace attention::mpi {

/// How the rows of the sequence are laid out over the P ranks of a ring.
enum class Layout {
  /// Rank r holds consecutive rows, in rank order: rank 0 the first rows, rank P - 1 the last.
  /// Shards may differ in size (a rank may hold a single row).
  contiguous,
  /// The sequence is cut into 2P equal chunks and rank r holds chunks r and 2P - 1 - r, in that
  /// order. With a causal mask every rank then does the same work (the early chunk sees few keys,
  /// the late one many), where contiguous shards leave rank 0 idle most of the time.
  zigzag,
};

namespace detail {

/// Rows [local_begin, local_begin + rows) of a rank's shard are the global rows
/// [global_begin, global_begin + rows).
struct Segment {
  Index global_begin = 0;
  Index local_begin = 0;
  Index rows = 0;
};

/// A rank's rows: one segment (contiguous layout) or two (zigzag).
struct Shard {
  Segment segments[2];
  int count = 0;
};

/// The shard of `rank` when rank r holds rows_per_rank[r] rows. For Layout::zigzag each rank's
/// count must be even (two chunks) and equal; the caller has checked that.
[[nodiscard]] inline Shard shard_of(Layout layout, int rank,
                                    const std::vector<Index>& rows_per_rank) {
  Shard shard;
  if (layout == Layout::contiguous) {
    Index begin = 0;
    for (int r = 0; r < rank; ++r) begin += rows_per_rank[static_cast<std::size_t>(r)];
    shard.segments[0] = {begin, 0, rows_per_rank[static_cast<std::size_t>(rank)]};
    shard.count = 1;
  } else {
    const Index ranks = static_cast<Index>(rows_per_rank.size());
    const Index chunk = rows_per_rank[static_cast<std::size_t>(rank)] / 2;
    shard.segments[0] = {rank * chunk, 0, chunk};
    shard.segments[1] = {(2 * ranks - 1 - rank) * chunk, chunk, chunk};
    shard.count = 2;
  }
  return shard;
}

/// The mask of one kernel call.
enum class CallMask {
  none,                ///< NoMask: every key of the range is visible to every query of the range
  causal_lower_right,  ///< attention::causal_lower_right over the ranges
};

/// One kernel call: query rows [q_begin, q_begin + q_rows) of the local shard against key rows
/// [k_begin, k_begin + k_rows) of the block, with `mask`.
struct Call {
  Index q_begin = 0;
  Index q_rows = 0;
  Index k_begin = 0;
  Index k_rows = 0;
  CallMask mask = CallMask::none;
};

/// Appends to `calls` what the local query rows [row0, row0 + rows) of segment `q` compute against
/// the key segment `k` under the causal rule (see the top of this header): at most two calls, none
/// when no row sees a key.
inline void plan_causal(const Segment& q, Index row0, Index rows, const Segment& k,
                        std::vector<Call>& calls) {
  const Index g0 = q.global_begin + row0;  // global position of the first query row
  // Rows [0, hidden) see no key; [hidden, staircase_end) see 1 .. S keys; the rest see all S.
  const Index hidden = std::clamp<Index>(k.global_begin - g0, 0, rows);
  const Index staircase_end = std::clamp<Index>(k.global_begin + k.rows - g0, hidden, rows);
  if (staircase_end > hidden) {
    // Its last row, global g0 + staircase_end - 1, sees keys up to that position.
    const Index keys = g0 + staircase_end - k.global_begin;
    calls.push_back({q.local_begin + row0 + hidden, staircase_end - hidden, k.local_begin, keys,
                     CallMask::causal_lower_right});
  }
  if (rows > staircase_end) {
    calls.push_back({q.local_begin + row0 + staircase_end, rows - staircase_end, k.local_begin,
                     k.rows, CallMask::none});
  }
}

/// The kernel calls that the local query shard `q` makes against the key block `k` (another
/// rank's shard, or its own), in pieces of at most `piece_rows` query rows so that the caller can
/// let MPI make progress between calls. causal: the causal rule over global positions; otherwise
/// every query sees every key. Unmasked calls of one piece against the two adjacent segments of a
/// zigzag block are joined into one.
[[nodiscard]] inline std::vector<Call> plan_block(const Shard& q, const Shard& k, bool causal,
                                                  Index piece_rows) {
  std::vector<Call> calls;
  for (int qs = 0; qs < q.count; ++qs) {
    const Segment& q_segment = q.segments[qs];
    for (Index row0 = 0; row0 < q_segment.rows; row0 += piece_rows) {
      const Index rows = std::min(piece_rows, q_segment.rows - row0);
      if (!causal) {
        Index k_rows = 0;
        for (int ks = 0; ks < k.count; ++ks) k_rows += k.segments[ks].rows;
        calls.push_back({q_segment.local_begin + row0, rows, 0, k_rows, CallMask::none});
        continue;
      }
      const std::size_t first = calls.size();
      for (int ks = 0; ks < k.count; ++ks)
        plan_causal(q_segment, row0, rows, k.segments[ks], calls);
      // Two unmasked calls of the same rows against adjacent key ranges: one call.
      if (calls.size() == first + 2) {
        const Call& a = calls[first];
        const Call& b = calls[first + 1];
        if (a.mask == CallMask::none && b.mask == CallMask::none && a.q_begin == b.q_begin &&
            a.q_rows == b.q_rows && a.k_begin + a.k_rows == b.k_begin) {
          calls[first].k_rows += b.k_rows;
          calls.pop_back();
        }
      }
    }
  }
  return calls;
}

}  // namespace detail
}  // namespace attention::mpi
