#pragma once
// SPDX-License-Identifier: MIT
//
// How the kernels share work among threads, and the rules that keep results independent of the
// thread count. Nothing here depends on the instruction set: the kernels hand it their per-tile
// work as callables.
//
// Threads come from OpenMP when the user compiles with it (-fopenmp), as many as Eigen::nbThreads()
// (which follows OMP_NUM_THREADS, omp_set_num_threads and Eigen::setNbThreads), never more than
// there are units of work, nor more than the work is worth (min_multiply_adds_per_thread). Without
// OpenMP everything runs on the calling thread.
//
// Determinism: every result is bitwise identical for any thread count. The rules that make it so:
//   - A unit of work (a forward query tile, a decode (K/V head, chunk) part, a backward key span)
//     is computed by one thread with the same instruction sequence whoever runs it: which thread
//     takes it may change, its arithmetic may not. The forward's query rows are independent of
//     each other (each row's products and softmax steps are its own), so its tiles may also be
//     cut into row pieces (ForwardJobs::tail_unit) without changing a row's arithmetic.
//   - How the work is cut depends on the sizes only, never on the thread count: decode's chunks
//     (decode_chunk keys), the backward's key spans and dq groups (key_span_for, key_groups).
//   - Partial results are combined in a fixed order: decode's chunks in chunk order, the backward's
//     partial dq in group order.
// Thread counts may depend on anything (sizes, Eigen::nbThreads()); work decompositions may not.

#include <Eigen/Core>
#include <algorithm>

#include "attention/types.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

/// ATTENTION_OMP(directive): `#pragma directive` when compiled with OpenMP, nothing otherwise
/// (an unknown pragma would warn, and the project's own targets build with -Werror).
#if defined(_OPENMP)
#define ATTENTION_OMP(...) _Pragma(#__VA_ARGS__)
#else
#define ATTENTION_OMP(...)
#endif

namespace attention::detail::kernels {

/// Threads for `work_items` units of work: Eigen::nbThreads(), at most one per unit, at least 1.
inline int thread_count(Index work_items) {
#if defined(_OPENMP)
  return static_cast<int>(std::max<Index>(1, std::min<Index>(Eigen::nbThreads(), work_items)));
#else
  (void)work_items;
  return 1;
#endif
}

/// Least work worth a thread of its own, in multiply-adds. Sharing a call costs a parallel region
/// and a barrier per work-sharing loop: a few microseconds while the team's threads spin, tens when
/// they must be woken (libgomp parks them after spinning GOMP_SPINCOUNT times, a fraction of a
/// millisecond), more when another process holds the core the team needs. A second thread pays
/// only when its share is large against that: 2^21 multiply-adds are about 40 us of one AVX2 core
/// at its FMA peak (2 x 8 lanes x ~3.2 GHz), 20 us of a full-width AVX-512 one.
inline constexpr double min_multiply_adds_per_thread = double(Index{1} << 21);

/// Threads for `work_items` units of work costing `multiply_adds` in all: thread_count(work_items),
/// and no more than one per min_multiply_adds_per_thread, so that a call too small to share runs on
/// the calling thread alone.
inline int thread_count(Index work_items, double multiply_adds) {
  const double threads_worth = multiply_adds / min_multiply_adds_per_thread;
  const Index cap = threads_worth < 1     ? 1
                    : threads_worth > 1e6 ? Index{1000000}
                                          : static_cast<Index>(threads_worth);
  return thread_count(std::min(work_items, cap));
}

/// Index of the calling thread inside a parallel region (0 outside, or without OpenMP).
inline int thread_index() {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Runs body() once on each of `threads` threads (an OpenMP parallel region; on the calling thread
/// alone when threads == 1). Inside, share_static and share_dynamic split loops among them.
template <typename Body>
void run_parallel(int threads, const Body& body) {
  ATTENTION_OMP(omp parallel num_threads(threads) if (threads > 1))
  body();
  (void)threads;
}

/// Inside run_parallel: f(i) for i in [0, n), in contiguous blocks of about n / threads, then a
/// barrier. For work of equal cost per item.
template <typename F>
void share_static(Index n, const F& f) {
  ATTENTION_OMP(omp for schedule(static))
  for (Index i = 0; i < n; ++i) f(i);
}

/// share_static without the barrier at the end (a later loop must not need these results, or
/// must follow a barrier()).
template <typename F>
void share_static_nowait(Index n, const F& f) {
  ATTENTION_OMP(omp for schedule(static) nowait)
  for (Index i = 0; i < n; ++i) f(i);
}

/// Inside run_parallel: f(i) for i in [0, n), handed out one at a time in order of i to the next
/// free thread, then a barrier. For work of uneven cost (tiles under a causal mask).
template <typename F>
void share_dynamic(Index n, const F& f) {
  ATTENTION_OMP(omp for schedule(dynamic, 1))
  for (Index i = 0; i < n; ++i) f(i);
}

/// share_dynamic without the barrier at the end.
template <typename F>
void share_dynamic_nowait(Index n, const F& f) {
  ATTENTION_OMP(omp for schedule(dynamic, 1) nowait)
  for (Index i = 0; i < n; ++i) f(i);
}

/// Inside run_parallel: waits until every thread of the region arrives.
inline void barrier() { ATTENTION_OMP(omp barrier) }

// ---- The forward's query tiles ------------------------------------------------------------------

/// K/V heads the forward packs and runs together (forward.hpp): enough to give every thread about
/// four query tiles, so that few query tiles per head (short sequences) still keep the threads busy
/// between the steps' barriers; no more, so that a step's packed K and V stay in L2 while its query
/// tiles reuse them.
inline Index kv_heads_per_step(Index num_kv_heads, Index tiles_per_kv_head, int threads) {
  const Index wanted_tiles = Index{4} * threads;
  return std::min(num_kv_heads,
                  std::max<Index>(1, (wanted_tiles + tiles_per_kv_head - 1) / tiles_per_kv_head));
}

/// Bytes of packed K and V panels that a call may hold as private copies, one per thread, all
/// copies together (ForwardJobs::panel_copies).
inline constexpr double private_panels_budget = double(Index{4} << 20);

/// The forward's work (forward.hpp; bf16_forward.hpp on bfloat16 pairs) and the order it runs in,
/// for any packing and tile step (ForwardJobs::run). Per KV head, its key blocks are packed (K for
/// the q k^T micro-kernel, V for the p v one), then the query tiles of its query heads run against
/// the packed panels. The KV heads are taken a few at a time (kv_heads_per_step): their K and V
/// are packed, then their query tiles run, and only then the next few are packed. Packing every
/// head up front and then running the tiles would stream each head's packed panels back from
/// memory (16 heads of 2048 keys at d = 64 are 16 MiB, against a 1 MiB L2), and taking tiles
/// across heads would swap the cached K/V on every tile; a step of one KV head keeps its
/// 0.5 + 0.5 MiB in L2 while its query tiles reuse them.
///
/// Private panels: when a step's packed K and V are small (all threads' copies within
/// private_panels_budget), every thread packs the whole step into a copy of its own instead of
/// sharing the packing. Shared panels cost a small call more than the packing they save: the
/// tiles wait at the barrier behind the packing, a thread reads the panels another thread packed
/// from that core's cache, and the next call's packing must take those lines back from the cores
/// that read them. With private copies a thread's panels stay in its own L2 from packing to its
/// last tile and no barrier separates the steps. Each thread then packs S x (d + d_v) entries
/// instead of 1 / threads of them, against L x S x (d + d_v) multiply-adds per KV head shared by
/// all: little, and only for steps small enough that the barrier and the transfers weigh more.
/// Packing is the same arithmetic whoever does it, so results do not change.
struct ForwardJobs {
  Index num_kv_heads, heads_per_kv, num_key_blocks, num_query_blocks, block_rows, num_queries;
  int threads;
  Index step_heads;    // KV heads packed and run together (kv_heads_per_step)
  Index panel_copies;  // 1 (panels shared by all threads) or threads (a private copy each)

  /// num_heads query heads, heads_per_kv of them per KV head (heads_per_kv divides num_heads),
  /// of num_queries queries in tiles of block_rows against num_keys keys in blocks of block_cols;
  /// d + d_v multiply-adds per (query, key) pair of every head (an upper bound when a mask hides
  /// tiles) set how many threads the call is worth. A packed entry of K or V takes entry_bytes.
  ForwardJobs(Index num_heads, Index heads_per_kv, Index num_queries, Index num_keys, Index d,
              Index d_v, Index block_rows, Index block_cols, Index entry_bytes)
      : num_kv_heads(kv_heads(num_heads, heads_per_kv)),
        heads_per_kv(heads_per_kv),
        num_key_blocks((num_keys + block_cols - 1) / block_cols),
        num_query_blocks((num_queries + block_rows - 1) / block_rows),
        block_rows(block_rows),
        num_queries(num_queries) {
    const double multiply_adds = static_cast<double>(num_heads) * static_cast<double>(num_queries) *
                                 static_cast<double>(num_keys) * static_cast<double>(d + d_v);
    threads = thread_count(num_heads * std::max(num_query_blocks, num_key_blocks), multiply_adds);
    step_heads = kv_heads_per_step(num_kv_heads, heads_per_kv * num_query_blocks, threads);
    const double step_panel_bytes = static_cast<double>(step_heads * num_key_blocks * block_cols) *
                                    static_cast<double>((d + d_v) * entry_bytes);
    panel_copies = threads > 1 && threads * step_panel_bytes <= private_panels_budget ? threads : 1;
  }

  /// Steps' worth of packed panels the workspace must hold: step_heads of them per copy.
  [[nodiscard]] Index panel_slots() const { return step_heads * panel_copies; }

  /// num_heads / heads_per_kv, once the division is checked to be exact.
  static Index kv_heads(Index num_heads, Index heads_per_kv) {
    eigen_assert(heads_per_kv >= 1 && num_heads % heads_per_kv == 0);
    return num_heads / heads_per_kv;
  }

  /// Query tiles of a step of `step_tiles` tiles that go out cut in two (tail_unit): the last
  /// 2 x threads of the step, none on one thread. A step ends in a barrier, so the first thread to
  /// find no tile left waits for the others' last ones: with whole tiles, half a tile on average
  /// (a 64-row tile at N = 4096, d = 128 is about 0.7 ms of a Zen 5 core), whatever makes the
  /// threads' paces differ (other processes, interrupts, clocks); with halves at the end, a
  /// quarter. A half of 32 rows reads each key block's panels once per 32 x (d + d_v)
  /// multiply-adds, twice the bytes per multiply-add of a whole tile, for 2 x threads tiles only.
  /// A row's arithmetic is the same in a half as in a whole tile (every product and softmax step
  /// is per row, in micro-tiles of mr rows, and block_rows / 2 is a multiple of mr), so the cut
  /// may depend on the thread count.
  [[nodiscard]] Index split_tiles(Index step_tiles) const {
    return threads > 1 ? std::min(step_tiles, Index{2} * threads) : 0;
  }

  /// The query rows of a step's unit u: tiles in the order of run (tile t below), the last
  /// split_tiles(step_tiles) of them as two halves each (units step_tiles - split + 2 k and
  /// 2 k + 1 for the k-th of them). `rows` is 0 for the second half of a tile of at most
  /// block_rows / 2 rows (the last tile of a head).
  struct Unit {
    Index tile, row_offset, rows;  // step tile index; rows [row_offset, +rows) of that tile
  };
  [[nodiscard]] Unit tail_unit(Index u, Index step_tiles) const {
    const Index whole = step_tiles - split_tiles(step_tiles);
    const Index tile = u < whole ? u : whole + (u - whole) / 2;
    const Index row0 = tile_row0(tile);
    const Index tile_rows = std::min(block_rows, num_queries - row0);
    if (u < whole) return {tile, 0, tile_rows};
    const Index half = block_rows / 2, offset = (u - whole) % 2 * half;
    return {tile, offset, std::max<Index>(0, std::min(half, tile_rows - offset))};
  }

  /// First query row of a step's tile t: head by head, each head's last tile first.
  [[nodiscard]] Index tile_row0(Index t) const {
    return (num_query_blocks - 1 - t % num_query_blocks) * block_rows;
  }

  /// Runs the call on `threads` threads: for each step of step_heads KV heads,
  /// pack_key_block(kv_head, slot, kb) for every key block kb of those heads, then
  /// run_query_tile(head, slot, row0, rows, thread) for every query tile [row0, row0 + rows) of
  /// their query heads, handed out one at a time, head by head, each head's last (under a causal
  /// mask, most expensive) tile first, the step's last tiles in halves (tail_unit). `slot`, in
  /// [0, panel_slots()), says where a KV head's panels go: its place in the step, in the calling
  /// thread's copy when panels are private. `thread` is the calling thread's index (for its
  /// workspace); which thread runs a row must not change its result (top of this file). Shared
  /// panels are packed by all threads together, and the work-sharing loops end in barriers, so a
  /// step's panels are complete before its tiles start and in use until they end. Private ones
  /// are packed by their thread, before its own tiles and after its tiles of the step before.
  template <typename PackKeyBlock, typename RunQueryTile>
  void run(const PackKeyBlock& pack_key_block, const RunQueryTile& run_query_tile) const {
    const Index tiles_per_kv_head = heads_per_kv * num_query_blocks;
    run_parallel(threads, [&] {
      const int thread = thread_index();
      const Index first_slot = panel_copies > 1 ? thread * step_heads : 0;
      for (Index first_kv = 0; first_kv < num_kv_heads; first_kv += step_heads) {
        const Index step_kv_heads = std::min(step_heads, num_kv_heads - first_kv);
        const auto pack = [&](Index job) {
          const Index slot = job / num_key_blocks;
          pack_key_block(first_kv + slot, first_slot + slot, job % num_key_blocks);
        };
        const Index step_tiles = step_kv_heads * tiles_per_kv_head;
        const auto run_unit = [&](Index u) {
          const Unit unit = tail_unit(u, step_tiles);
          if (unit.rows == 0) return;
          const Index head = first_kv * heads_per_kv + unit.tile / num_query_blocks;
          run_query_tile(head, first_slot + head / heads_per_kv - first_kv,
                         tile_row0(unit.tile) + unit.row_offset, unit.rows, thread);
        };
        if (panel_copies > 1) {
          for (Index job = 0; job < step_kv_heads * num_key_blocks; ++job) pack(job);
          share_dynamic_nowait(step_tiles + split_tiles(step_tiles), run_unit);
        } else {
          share_static(step_kv_heads * num_key_blocks, pack);
          share_dynamic(step_tiles + split_tiles(step_tiles), run_unit);
        }
      }
    });
  }
};

// ---- Decode: few queries, many keys ------------------------------------------------------------

/// Keys per chunk of the decode path.
inline constexpr Index decode_chunk = 256;
/// Keys per step of a decode job (a divisor of decode_chunk).
inline constexpr Index decode_step = 16;
/// The decode path serves calls of at most this many queries against at least 2 chunks of keys.
inline constexpr Index decode_max_queries = 16;

/// True when multi_head_attention takes the split-key decode path (sizes only, never the thread
/// count, so that the result does not depend on it).
inline bool use_decode_path(Index num_queries, Index num_keys) {
  return num_queries <= decode_max_queries && num_keys >= 2 * decode_chunk;
}

/// How decode's (K/V head, chunk) parts are grouped into jobs: a job is one chunk of every K/V head
/// in a slice of groups_per_job of them, slices only when there are too few chunks to give every
/// thread about four jobs. A part is computed the same way whatever job holds it.
struct DecodeJobs {
  Index num_chunks, groups_per_job, jobs, jobs_per_chunk;
  int threads;

  DecodeJobs(Index num_keys, Index num_groups)
      : num_chunks((num_keys + decode_chunk - 1) / decode_chunk) {
    const Index wanted_jobs = Index{4} * thread_count(num_chunks * num_groups);
    const Index slices =
        std::min(num_groups, std::max<Index>(1, (wanted_jobs + num_chunks - 1) / num_chunks));
    groups_per_job = (num_groups + slices - 1) / slices;
    jobs = num_chunks * ((num_groups + groups_per_job - 1) / groups_per_job);
    jobs_per_chunk = jobs / num_chunks;
    threads = thread_count(jobs);
  }
};

// ---- The backward's key spans ------------------------------------------------------------------

/// Keys per unit of the backward's work: a span of consecutive key blocks is processed together
/// against each query block, so that a query block's partial dq (block_rows x d_k) is read and
/// written once per span rather than once per key block: that traffic per multiply-add of the dq
/// product falls as 1 / (span x block_cols). Longer spans cut it further but leave fewer spans to
/// share among threads (and among the key_groups below), so 8 blocks are taken only when the keys
/// still make 8 such spans, 4 otherwise.
inline constexpr Index max_key_span = 8;
inline Index key_span_for(Index num_key_blocks) {
  return num_key_blocks >= 8 * max_key_span ? max_key_span : max_key_span / 2;
}

/// Number of partial dq accumulators: enough groups of key spans to keep several threads busy, few
/// enough that their memory (key_groups x L x d_k) stays a small multiple of q's. A function of the
/// sizes only, never of the thread count, so that the summation order is fixed.
inline Index key_groups(Index num_spans) { return std::min<Index>(num_spans, 8); }

}  // namespace attention::detail::kernels
