// SPDX-License-Identifier: MIT
//
// kernels/scheduling.hpp: the work-sharing loops hand out every index exactly once whatever the
// thread count, a call shares only work worth a thread, and the work decompositions that fix the
// results' rounding (decode's chunks and jobs, the backward's key spans and dq groups, the
// decode-path switch) depend on the sizes only. Built with OpenMP when available
// (tests/CMakeLists.txt), so that threads really share the loops.

#include <gtest/gtest.h>

#include <atomic>
#include <attention/kernels/scheduling.hpp>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace {

using attention::Index;
namespace kernels = attention::detail::kernels;

/// Sets Eigen's thread count for the scope of the object (the kernels ask Eigen::nbThreads()).
class ThreadCount {
 public:
  explicit ThreadCount(int threads) : saved_(Eigen::nbThreads()) { Eigen::setNbThreads(threads); }
  ~ThreadCount() { Eigen::setNbThreads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

TEST(Scheduling, ThreadCountIsAtLeastOneAndAtMostTheWork) {
  for (const int threads : {1, 2, 3}) {
    const ThreadCount scope(threads);
    EXPECT_EQ(kernels::thread_count(0), 1);
    EXPECT_EQ(kernels::thread_count(1), 1);
#if defined(_OPENMP)
    EXPECT_EQ(kernels::thread_count(1000), threads);
    EXPECT_EQ(kernels::thread_count(2), std::min(2, threads));
#else
    EXPECT_EQ(kernels::thread_count(1000), 1);
#endif
  }
}

// A call is shared only as far as its work is worth: below min_multiply_adds_per_thread per extra
// thread it runs on one, however many threads are allowed and units there are.
TEST(Scheduling, SmallWorkRunsOnOneThread) {
  const double unit = kernels::min_multiply_adds_per_thread;
  for (const int threads : {1, 2, 3}) {
    const ThreadCount scope(threads);
    EXPECT_EQ(kernels::thread_count(1000, 0.0), 1);
    EXPECT_EQ(kernels::thread_count(1000, 1.99 * unit), 1);
#if defined(_OPENMP)
    EXPECT_EQ(kernels::thread_count(1000, 2 * unit), std::min(2, threads));
    EXPECT_EQ(kernels::thread_count(1000, 1e12 * unit), threads);
    EXPECT_EQ(kernels::thread_count(2, 1e12 * unit), std::min(2, threads));
#else
    EXPECT_EQ(kernels::thread_count(1000, 1e12 * unit), 1);
#endif
  }
}

// share_static, share_static_nowait (then a barrier) and share_dynamic inside one run_parallel:
// each index is visited exactly once, on 1, 2 and 3 threads.
TEST(Scheduling, EveryIndexIsVisitedExactlyOnce) {
  constexpr Index n = 257;
  for (const int threads : {1, 2, 3}) {
    std::vector<std::atomic<int>> a(n), b(n), c(n);
    std::atomic<int> bodies{0};
    kernels::run_parallel(threads, [&] {
      ++bodies;
      kernels::share_static(n, [&](Index i) { ++a[static_cast<std::size_t>(i)]; });
      kernels::share_static_nowait(n, [&](Index i) { ++b[static_cast<std::size_t>(i)]; });
      kernels::barrier();
      kernels::share_dynamic(n, [&](Index i) { ++c[static_cast<std::size_t>(i)]; });
    });
#if defined(_OPENMP)
    EXPECT_EQ(bodies.load(), threads);
#else
    EXPECT_EQ(bodies.load(), 1);
#endif
    for (Index i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      ASSERT_EQ(a[k].load(), 1) << "share_static, threads " << threads << ", i " << i;
      ASSERT_EQ(b[k].load(), 1) << "share_static_nowait, threads " << threads << ", i " << i;
      ASSERT_EQ(c[k].load(), 1) << "share_dynamic, threads " << threads << ", i " << i;
    }
  }
}

#if defined(_OPENMP)
// The barrier: no thread reads the results of a nowait loop before every thread has written its
// share of them.
TEST(Scheduling, BarrierWaitsForTheNowaitLoop) {
  constexpr Index n = 64;
  std::vector<int> written(n, 0);
  std::atomic<int> missing{0};
  kernels::run_parallel(2, [&] {
    kernels::share_static_nowait(n, [&](Index i) { written[static_cast<std::size_t>(i)] = 1; });
    kernels::barrier();
    for (Index i = 0; i < n; ++i) {
      if (written[static_cast<std::size_t>(i)] != 1) ++missing;
    }
  });
  EXPECT_EQ(missing.load(), 0);
}
#endif

TEST(Scheduling, DecodePathIsTakenForFewQueriesAndManyKeys) {
  EXPECT_TRUE(kernels::use_decode_path(1, 2 * kernels::decode_chunk));
  EXPECT_TRUE(kernels::use_decode_path(kernels::decode_max_queries, 100000));
  EXPECT_FALSE(kernels::use_decode_path(1, 2 * kernels::decode_chunk - 1));
  EXPECT_FALSE(kernels::use_decode_path(kernels::decode_max_queries + 1, 100000));
  EXPECT_EQ(kernels::decode_chunk % kernels::decode_step, 0);
}

// Decode's jobs cover every (K/V head, chunk) part exactly once, chunks are fixed by the number of
// keys alone (so the merge order is too), and the thread count only changes how many parts a job
// holds.
TEST(Scheduling, DecodeJobsCoverEveryPartOnceAndChunksDependOnKeysOnly) {
  for (const Index num_keys : {512, 600, 4096, 32768}) {
    for (const Index groups : {1, 2, 8}) {
      Index chunks = -1;
      for (const int threads : {1, 2, 3}) {
        const ThreadCount scope(threads);
        const kernels::DecodeJobs jobs(num_keys, groups);
        if (chunks < 0) chunks = jobs.num_chunks;
        EXPECT_EQ(jobs.num_chunks, chunks);
        EXPECT_EQ(jobs.num_chunks, (num_keys + kernels::decode_chunk - 1) / kernels::decode_chunk);
        std::vector<int> covered(static_cast<std::size_t>(groups * jobs.num_chunks), 0);
        for (Index job = 0; job < jobs.jobs; ++job) {
          const Index c = job / jobs.jobs_per_chunk;
          const Index g_begin = job % jobs.jobs_per_chunk * jobs.groups_per_job;
          const Index g_end = std::min(groups, g_begin + jobs.groups_per_job);
          for (Index g = g_begin; g < g_end; ++g)
            ++covered[static_cast<std::size_t>(g * chunks + c)];
        }
        for (const int count : covered) EXPECT_EQ(count, 1);
        EXPECT_GE(jobs.threads, 1);
        EXPECT_LE(jobs.threads, threads);
      }
    }
  }
}

// The backward's spans and dq groups are functions of the sizes: 8-block spans only when the keys
// make 8 of them, at most 8 groups.
TEST(Scheduling, BackwardSpansAndGroupsDependOnSizesOnly) {
  EXPECT_EQ(kernels::key_span_for(1), kernels::max_key_span / 2);
  EXPECT_EQ(kernels::key_span_for(8 * kernels::max_key_span - 1), kernels::max_key_span / 2);
  EXPECT_EQ(kernels::key_span_for(8 * kernels::max_key_span), kernels::max_key_span);
  EXPECT_EQ(kernels::key_groups(3), 3);
  EXPECT_EQ(kernels::key_groups(100), 8);
}

// K/V heads per step of the forward: about four query tiles per thread, at least one head, never
// more than there are.
TEST(Scheduling, ForwardStepsGiveEveryThreadAboutFourTiles) {
  EXPECT_EQ(kernels::kv_heads_per_step(16, 64, 2), 1);  // one head has 64 tiles: plenty
  EXPECT_EQ(kernels::kv_heads_per_step(16, 1, 2), 8);   // 8 heads of one tile each
  EXPECT_EQ(kernels::kv_heads_per_step(3, 1, 2), 3);    // all there are
  EXPECT_EQ(kernels::kv_heads_per_step(16, 3, 2), 3);   // ceil(8 / 3)
}

// The forward's units of a step (ForwardJobs::tail_unit): every query row of every tile exactly
// once, in pieces that are whole tiles or halves starting at block_rows / 2 (a multiple of the
// micro-tiles' rows), no pieces on one thread, and the last 2 x threads tiles cut when shared.
TEST(Scheduling, ForwardUnitsCoverEveryQueryRowOnce) {
  for (const Index num_queries : {1, 45, 64, 100, 301, 4096}) {
    for (const Index block_rows : {48, 64, 128}) {
      for (const int threads : {1, 2, 3}) {
        for (const Index heads : {1, 3}) {
          SCOPED_TRACE(std::to_string(num_queries) + " queries, tiles of " +
                       std::to_string(block_rows) + ", " + std::to_string(threads) + " threads, " +
                       std::to_string(heads) + " heads");
          kernels::ForwardJobs jobs(heads, 1, num_queries, 512, 64, 64, block_rows, 64, 4);
          jobs.threads = threads;  // as many as asked, whatever the work is worth
          const Index tiles = heads * jobs.num_query_blocks;
          const Index split = jobs.split_tiles(tiles);
          EXPECT_EQ(split, threads == 1 ? 0 : std::min<Index>(tiles, 2 * threads));
          std::vector<int> seen(static_cast<std::size_t>(heads * num_queries), 0);
          for (Index u = 0; u < tiles + split; ++u) {
            const kernels::ForwardJobs::Unit unit = jobs.tail_unit(u, tiles);
            ASSERT_LT(unit.tile, tiles);
            EXPECT_TRUE(unit.row_offset == 0 || unit.row_offset == block_rows / 2);
            if (u < tiles - split) {  // a whole tile
              EXPECT_EQ(unit.row_offset, 0) << "unit " << u;
              EXPECT_EQ(unit.rows, std::min(block_rows, num_queries - jobs.tile_row0(unit.tile)));
            } else {
              EXPECT_LE(unit.rows, block_rows / 2) << "unit " << u;
            }
            const Index head = unit.tile / jobs.num_query_blocks;
            const Index row0 = jobs.tile_row0(unit.tile) + unit.row_offset;
            for (Index r = row0; r < row0 + unit.rows; ++r) {
              ASSERT_LT(r, num_queries);
              ++seen[static_cast<std::size_t>(head * num_queries + r)];
            }
          }
          for (const int count : seen) ASSERT_EQ(count, 1);
        }
      }
    }
  }
}

// ForwardJobs::run: a query tile finds the panels of its own KV head, every key block of them, in
// the slot it is given: packed in the same step, by its own thread when the panels are private.
// Small calls take private panels on several threads (private_panels_budget), large ones share.
TEST(Scheduling, ForwardTilesFindTheirKeyValueHeadsPanels) {
  struct Case {
    Index num_keys;
    bool small;
  };
  for (const Case c : {Case{256, true}, Case{40000, false}}) {
    for (const int threads : {1, 2, 3}) {
      SCOPED_TRACE(std::to_string(c.num_keys) + " keys, " + std::to_string(threads) + " threads");
      const ThreadCount scope(threads);
      // 6 query heads on 3 KV heads, 200 queries in tiles of 64, d = d_v = 64, floats.
      const kernels::ForwardJobs jobs(6, 2, 200, c.num_keys, 64, 64, 64, 64, 4);
      const bool private_panels = c.small && jobs.threads > 1;
      EXPECT_EQ(jobs.panel_copies, private_panels ? jobs.threads : 1);
      const auto cells = static_cast<std::size_t>(jobs.panel_slots() * jobs.num_key_blocks);
      std::vector<Index> packed_head(cells, -1);
      std::vector<int> packed_by(cells, -1);
      std::atomic<int> wrong_head{0}, wrong_thread{0}, bad_slot{0}, tiles{0};
      jobs.run(
          [&](Index kv_head, Index slot, Index kb) {
            if (slot < 0 || slot >= jobs.panel_slots()) {
              ++bad_slot;
              return;
            }
            const auto cell = static_cast<std::size_t>(slot * jobs.num_key_blocks + kb);
            packed_head[cell] = kv_head;
            packed_by[cell] = kernels::thread_index();
          },
          [&](Index head, Index slot, Index, Index, int thread) {
            ++tiles;
            if (slot < 0 || slot >= jobs.panel_slots()) {
              ++bad_slot;
              return;
            }
            for (Index kb = 0; kb < jobs.num_key_blocks; ++kb) {
              const auto cell = static_cast<std::size_t>(slot * jobs.num_key_blocks + kb);
              if (packed_head[cell] != head / 2) ++wrong_head;
              if (private_panels && packed_by[cell] != thread) ++wrong_thread;
            }
          });
      EXPECT_EQ(bad_slot.load(), 0);
      EXPECT_EQ(wrong_head.load(), 0);
      EXPECT_EQ(wrong_thread.load(), 0);
      EXPECT_GE(tiles.load(), 6 * jobs.num_query_blocks);  // halves count twice
    }
  }
}

}  // namespace
