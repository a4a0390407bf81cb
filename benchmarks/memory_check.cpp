// SPDX-License-Identifier: MIT
//
// Memory check for the streaming kernel (issue #3): one causal scaled_dot_product_attention call,
// float, d = 128, N tokens (default 65536), must complete with a peak resident set no larger than
// the inputs' and the output's own size plus 64 MiB:
//
//   memory_check [N] [--no-guard]
//
// Prints the peak RSS (getrusage's ru_maxrss) against that budget and exits 0 if it holds, 1 if
// not. A plain program rather than a Google Benchmark or a ctest: it measures the whole process
// once, and at the default size a materialising implementation would need N^2 * 4 bytes = 16 GiB.
//
// Guard: before allocating, the program caps its address space (setrlimit RLIMIT_AS) at what it has
// mapped so far + inputs + output + 2 GiB of slack (thread stacks, malloc arenas, kernel tiles). An
// implementation that tries to allocate the N x N scores then gets std::bad_alloc at once, and the
// check fails cleanly instead of driving a shared machine into swap or the OOM killer. --no-guard
// lifts the cap (e.g. to see what a materialising implementation really uses at a smaller N).

#include <sys/resource.h>

#include <attention/attention.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <string>

#include "bench_support.hpp"

namespace {

constexpr double mib = 1024.0 * 1024.0;

/// Peak resident set of this process so far, in bytes (Linux reports ru_maxrss in KiB).
double peak_rss_bytes() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;
}

/// User + system CPU time of this process so far, in seconds (all threads).
double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec * 1e-6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

/// Current virtual size of this process in bytes (VmSize in /proc/self/status), 0 if unknown.
double virtual_size_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmSize:", 0) == 0) return std::atof(line.c_str() + 7) * 1024.0;
  }
  return 0;
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [N (default 65536)] [--no-guard]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  attention::Index seq_len = 65536;
  const attention::Index head_dim = 128;
  bool guard = true;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--no-guard") == 0) {
      guard = false;
    } else if (argv[i][0] >= '1' && argv[i][0] <= '9') {
      seq_len = std::atoll(argv[i]);
    } else {
      return usage(argv[0]);
    }
  }

  const double matrix_bytes = static_cast<double>(seq_len) * head_dim * sizeof(float);
  const double own_bytes = 4 * matrix_bytes;  // q, k, v and out
  const double budget = own_bytes + 64 * mib;
  std::printf("memory_check: causal scaled_dot_product_attention, float, N = %lld, d = %lld\n",
              static_cast<long long>(seq_len), static_cast<long long>(head_dim));
#ifdef _OPENMP
  std::printf("  threads (OpenMP)          %d\n", omp_get_max_threads());
#endif
  std::printf("  inputs + output           %10.1f MiB\n", own_bytes / mib);
  std::printf("  budget (+ 64 MiB)         %10.1f MiB\n", budget / mib);
  std::printf("  N x N float scores would  %10.1f MiB\n",
              static_cast<double>(seq_len) * seq_len * sizeof(float) / mib);

  if (guard) {
    const double cap = virtual_size_bytes() + own_bytes + 2048 * mib;
    rlimit limit{};
    getrlimit(RLIMIT_AS, &limit);
    if (limit.rlim_max == RLIM_INFINITY || static_cast<double>(limit.rlim_max) > cap) {
      limit.rlim_cur = static_cast<rlim_t>(cap);
    }
    if (setrlimit(RLIMIT_AS, &limit) == 0) {
      std::printf("  address-space guard       %10.1f MiB (--no-guard lifts it)\n", cap / mib);
    }
  }

  try {
    const attention::RowMatrixXf q = support::random_matrix<float>(seq_len, head_dim, 1);
    const attention::RowMatrixXf k = support::random_matrix<float>(seq_len, head_dim, 2);
    const attention::RowMatrixXf v = support::random_matrix<float>(seq_len, head_dim, 3);
    attention::RowMatrixXf out(seq_len, head_dim);
    const double before = peak_rss_bytes();
    const double cpu_start = cpu_seconds();
    const auto start = std::chrono::steady_clock::now();
    attention::scaled_dot_product_attention(q, k, v, out, attention::causal);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double cpu = cpu_seconds() - cpu_start;
    const volatile float keep = out(seq_len - 1, head_dim - 1);
    (void)keep;
    const double peak = peak_rss_bytes();
    std::printf("  peak RSS before the call  %10.1f MiB\n", before / mib);
    std::printf("  peak RSS                  %10.1f MiB\n", peak / mib);
    const double flops = support::attention_flops(seq_len, head_dim, true);
    std::printf("  time                      %10.3f s (%.1f GFLOP/s)\n", seconds,
                flops / seconds * 1e-9);
    // On a shared machine the wall time includes waiting for a core; CPU time does not.
    std::printf("  CPU time, all threads     %10.3f s (%.1f GFLOP/s per busy core)\n", cpu,
                flops / cpu * 1e-9);
    if (peak > budget) {
      std::printf("FAIL: peak RSS exceeds the budget by %.1f MiB\n", (peak - budget) / mib);
      return 1;
    }
    std::printf("PASS: peak RSS is %.1f MiB under the budget\n", (budget - peak) / mib);
    return 0;
  } catch (const std::bad_alloc&) {
    std::printf(
        "FAIL: std::bad_alloc under the address-space guard: the implementation allocates far "
        "more than O(N) memory (does it materialise the N x N scores?)\n");
    return 1;
  }
}
