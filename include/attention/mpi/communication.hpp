#pragma once
// SPDX-License-Identifier: MIT
//
// The MPI plumbing of ring attention (<attention/mpi.hpp>): a private duplicate of the caller's
// communicator, a row-sized datatype, requests waited for together, and the error paths (an MPI
// error code becomes an exception; a failure once blocks are moving aborts the job).

// Open MPI's mpi.h also declares the C++ bindings that MPI-3 removed, whose casts GCC's
// -Wcast-function-type (in -Wextra) reports when mpi.h is not on a system include path.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-function-type"
#endif
#include <mpi.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <Eigen/Core>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "attention/types.hpp"

namespace attention::mpi::detail {

template <typename Scalar>
MPI_Datatype mpi_scalar_type() {
  if constexpr (std::is_same_v<Scalar, float>) {
    return MPI_FLOAT;
  } else {
    return MPI_DOUBLE;
  }
}

/// Fails loudly on an MPI error code (only seen when the communicator's error handler returns
/// codes; MPI's default handler aborts first).
inline void check_mpi(int code, const char* call) {
  if (code != MPI_SUCCESS) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw std::runtime_error(std::string("attention::mpi: ") + call +
                             " failed: " + std::string(text, static_cast<std::size_t>(length)));
  }
}

/// A duplicate of the caller's communicator, freed on scope exit, so that the ring's messages can
/// never match messages the caller has in flight on its own communicator.
class Communicator {
 public:
  Communicator(const char* func, MPI_Comm comm) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) {
      throw std::logic_error(std::string("attention::mpi::") + func +
                             ": MPI is not initialised (call MPI_Init first) or already finalised");
    }
    if (comm == MPI_COMM_NULL) {
      throw std::invalid_argument(std::string("attention::mpi::") + func +
                                  ": the communicator is MPI_COMM_NULL");
    }
    check_mpi(MPI_Comm_dup(comm, &comm_), "MPI_Comm_dup");
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~Communicator() { MPI_Comm_free(&comm_); }
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  [[nodiscard]] MPI_Comm get() const { return comm_; }
  [[nodiscard]] int rank() const { return rank_; }
  [[nodiscard]] int size() const { return size_; }
  [[nodiscard]] int next() const { return (rank_ + 1) % size_; }
  [[nodiscard]] int previous() const { return (rank_ + size_ - 1) % size_; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

/// An MPI datatype of `count` consecutive scalars: one row of a row-major matrix, so that message
/// counts are rows and stay far below INT_MAX. Freed on scope exit.
class RowType {
 public:
  RowType(MPI_Datatype scalar, Index count) {
    check_mpi(MPI_Type_contiguous(static_cast<int>(count), scalar, &type_), "MPI_Type_contiguous");
    check_mpi(MPI_Type_commit(&type_), "MPI_Type_commit");
  }
  ~RowType() { MPI_Type_free(&type_); }
  RowType(const RowType&) = delete;
  RowType& operator=(const RowType&) = delete;
  [[nodiscard]] MPI_Datatype get() const { return type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

/// Requests in flight, waited for together.
template <int Capacity>
class Requests {
 public:
  Requests() { clear(); }
  void clear() {
    for (MPI_Request& r : requests_) r = MPI_REQUEST_NULL;
    count_ = 0;
  }
  MPI_Request* add() { return &requests_[static_cast<std::size_t>(count_++)]; }
  /// Lets MPI progress these transfers without blocking.
  void poll() {
    if (count_ == 0) return;
    int done = 0;
    check_mpi(MPI_Testall(count_, requests_.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
  }
  /// Blocks until all are done; the time spent adds to *seconds.
  void wait(double* seconds) {
    if (count_ == 0) return;
    const double start = MPI_Wtime();
    check_mpi(MPI_Waitall(count_, requests_.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
    *seconds += MPI_Wtime() - start;
    clear();
  }

 private:
  std::array<MPI_Request, Capacity> requests_;
  int count_ = 0;
};

[[noreturn]] inline void abort_ring(const Communicator& comm, const char* func, const char* what) {
  std::fprintf(stderr,
               "attention::mpi::%s: rank %d failed while blocks were in flight (%s); aborting the "
               "job, since the other ranks would wait for it forever\n",
               func, comm.rank(), what);
  std::fflush(stderr);
  MPI_Abort(comm.get(), 1);
  std::abort();
}

}  // namespace attention::mpi::detail
