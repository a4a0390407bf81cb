#pragma once
// SPDX-License-Identifier: MIT
//
// Running a piece of a test with a given number of threads, for the determinism tests (the same
// bits for 1, 2 and 3 threads).

#include <Eigen/Core>
#if defined(_OPENMP)
#include <omp.h>
#endif
#include <utility>

namespace support {

/// Runs body() with n threads (Eigen::setNbThreads, which the library's OpenMP regions follow),
/// then restores the default (0: follow OpenMP) even if body throws, and returns what body
/// returns. Built without OpenMP, the setting has no effect and body runs on one thread.
template <typename F>
decltype(auto) with_threads(int n, F&& body) {
  struct RestoreDefault {
    RestoreDefault(const RestoreDefault&) = delete;
    RestoreDefault& operator=(const RestoreDefault&) = delete;
    RestoreDefault() = default;
    ~RestoreDefault() { Eigen::setNbThreads(0); }
  };
  Eigen::setNbThreads(n);
  const RestoreDefault restore;
  return std::forward<F>(body)();
}

/// While alive, OpenMP regions run on one thread (omp_set_num_threads(1), restored on
/// destruction): for finite-difference checks, thousands of small calls that threads only slow.
struct SingleThread {
#if defined(_OPENMP)
  int saved = omp_get_max_threads();
  SingleThread() { omp_set_num_threads(1); }
  ~SingleThread() { omp_set_num_threads(saved); }
#endif
};

}  // namespace support
