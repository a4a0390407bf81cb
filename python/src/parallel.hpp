#pragma once
// SPDX-License-Identifier: MIT
//
// Runs the independent problems of a batch (one per batch index, e.g. per (batch, head) pair)
// with the GIL released, in parallel, without stacking two levels of threads on the cores.
//
// The library itself shares one call's work (query tiles, heads) among Eigen::nbThreads() OpenMP
// threads. Here a batch of `count` problems is split one of two ways:
//   count >= threads: the problems are shared among the threads, and each call runs on one
//                     thread (inside the team, omp_set_num_threads(1) sets the nested thread
//                     count of that thread only, so the library opens no inner team);
//   count <  threads: the problems run one after another, each with all of the library's threads.
// Either way at most `threads` threads compute at once. Results do not depend on the split: the
// library's results are bitwise identical for any thread count.
// Built without OpenMP, the library runs serially, and the problems are shared among
// std::thread workers (hardware_concurrency of them at most).

#include <Eigen/Core>
#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <pybind11/pybind11.h>

#include <attention/types.hpp>

namespace attention_python {

using attention::Index;

/// Threads the library would use for one call: Eigen::nbThreads() (OMP_NUM_THREADS,
/// omp_set_num_threads, Eigen::setNbThreads); without OpenMP, the hardware's.
inline int available_threads() {
#ifdef _OPENMP
  return std::max(1, Eigen::nbThreads());
#else
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
}

/// Calls solve(i) for every i in [0, count), with the GIL released. An exception thrown by a call
/// is rethrown here (the one of the lowest index) once every call has finished; the GIL is held
/// again by then, so pybind11 can translate it.
template <typename Solve>
void for_each_problem(Index count, const Solve& solve) {
  if (count <= 0) return;
  std::exception_ptr error;
  Index error_index = count;
  std::mutex error_mutex;
  const auto run = [&](Index i) {
    try {
      solve(i);
    } catch (...) {
      const std::lock_guard<std::mutex> lock(error_mutex);
      if (i < error_index) {
        error_index = i;
        error = std::current_exception();
      }
    }
  };
  {
    pybind11::gil_scoped_release release;
    const int threads = available_threads();
    if (count < threads || threads == 1) {
      for (Index i = 0; i < count; ++i) run(i);
    } else {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
      {
        omp_set_num_threads(1);  // this thread's nested regions only: the library stays serial
#pragma omp for schedule(dynamic, 1)
        for (Index i = 0; i < count; ++i) run(i);
      }
#else
      std::atomic<Index> next{0};
      std::vector<std::thread> workers;
      for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&] {
          for (Index i = next++; i < count; i = next++) run(i);
        });
      }
      for (auto& worker : workers) worker.join();
#endif
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace attention_python
