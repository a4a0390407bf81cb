#pragma once
// SPDX-License-Identifier: MIT
//
// Ring attention over MPI (context parallelism): one sequence whose tokens are spread over the P
// ranks of a communicator, each rank holding a shard of the rows of q, k and v. The key/value
// shards travel around the ring (rank r sends to r + 1 and receives from r - 1), and each rank
// combines its queries' attention over every block with the log-sum-exp rule of partial.hpp:
//   lse = log(exp(lse_a) + exp(lse_b)),  out = (exp(lse_a) out_a + exp(lse_b) out_b) / exp(lse)
// (Liu, Zaharia & Abbeel, 2023, "Ring Attention with Blockwise Transformers for Near-Infinite
// Context"; the zigzag layout is the load balancing of Llama 3's context parallelism, Dubey et
// al., 2024, sec. 3.3.2). The backward sends each block's dK and dV accumulators along with it, so
// after P steps they arrive back at the block's owner.
//
//   MPI_Init(&argc, &argv);                                          // once, by the program
//   auto out = attention::mpi::ring_attention(MPI_COMM_WORLD, q_local, k_local, v_local,
//                                             attention::causal, {},
//                                             {attention::mpi::Layout::zigzag});
//
// Needs an MPI implementation: link the CMake target attention::mpi (which brings MPI::MPI_CXX) and
// run under mpirun. <attention/attention.hpp> does not include this header.
//
// Memory per rank is O((N / P) d): a rank holds its own rows of q, the result and two key/value
// blocks (the one it computes with and the one arriving), never the whole of K or V.
//
// Every rank must call the same function with the same mask, options and layout. Shapes are
// checked collectively before any data moves: if any rank's arguments are wrong, every rank throws
// the same exception (a ShapeError naming the rank and the sizes), so none waits forever. Once the
// blocks are moving, a failure on one rank (out of memory) cannot be reported to the others without
// leaving them waiting: the rank prints the error and calls MPI_Abort on the communicator.

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
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "attention/errors.hpp"
#include "attention/mask.hpp"
#include "attention/mpi/ring_schedule.hpp"
#include "attention/options.hpp"
#include "attention/partial.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

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
  Layout layout = Layout::contiguous;
  /// If set, receives this rank's RingStats for the call (overwritten).
  RingStats* stats = nullptr;
};

namespace detail {

/// Query rows per kernel call. Between calls the ring lets MPI progress the block in flight
/// (MPI_Testall), which implementations without a progress thread need for the transfer to
/// overlap the computation. Each call packs its keys afresh, so pieces must not be too small:
/// causal N = 4096, d = 128 in pieces of 512 queries took the CPU time of one call (96.0 against
/// 96.7 ms), pieces of 256 2 % more, of 128 8 % more.
constexpr Index piece_rows = 512;

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

// --- The collective check
// -------------------------------------------------------------------------

enum class CallKind : std::int64_t { forward = 1, backward = 2 };

/// One rank's call, as integers, gathered by every rank before any data moves.
enum Field : int {
  call_kind,
  scalar_bytes,
  causal_mask,
  layout,
  q_rows,
  q_cols,
  k_rows,
  k_cols,
  v_rows,
  v_cols,
  out_rows,
  out_cols,
  lse_size,
  d_out_rows,
  d_out_cols,
  scale_set,
  scale_bits,
  softcap_set,
  softcap_bits,
  options_rejected,
  non_finite,
  field_count
};
using Summary = std::array<std::int64_t, field_count>;

inline std::int64_t bits_of(double x) {
  std::int64_t bits = 0;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline double double_of(std::int64_t bits) {
  double x = 0;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

/// Bits of Field::non_finite: which backward input holds a NaN or an infinity.
inline constexpr const char* input_names[] = {"q_local",   "k_local",   "v_local",
                                              "out_local", "lse_local", "d_out_local"};

/// The shapes and settings of this rank's call. Options are validated here, by the library's own
/// rules, on a 1 x 1 problem (they do not depend on the sizes): a rejection is recorded, not
/// thrown, so that every rank reaches the exchange.
template <typename Scalar>
Summary summarize(CallKind kind, bool causal, Layout layout, const ConstMatrixRef<Scalar>& q,
                  const ConstMatrixRef<Scalar>& k, const ConstMatrixRef<Scalar>& v,
                  const Options& options, std::string& options_error) {
  Summary s{};
  s.fill(-1);
  s[call_kind] = static_cast<std::int64_t>(kind);
  s[scalar_bytes] = static_cast<std::int64_t>(sizeof(Scalar));
  s[causal_mask] = causal ? 1 : 0;
  s[Field::layout] = layout == Layout::zigzag ? 1 : 0;
  s[q_rows] = q.rows();
  s[q_cols] = q.cols();
  s[k_rows] = k.rows();
  s[k_cols] = k.cols();
  s[v_rows] = v.rows();
  s[v_cols] = v.cols();
  s[scale_set] = options.scale.has_value();
  s[scale_bits] = options.scale ? bits_of(*options.scale) : 0;
  s[softcap_set] = options.softcap.has_value();
  s[softcap_bits] = options.softcap ? bits_of(*options.softcap) : 0;
  s[options_rejected] = 0;
  s[non_finite] = 0;
  try {
    const Matrix<Scalar> one = Matrix<Scalar>::Zero(1, 1);
    (void)scaled_dot_product_attention(one, one, one, NoMask{}, options);
  } catch (const std::invalid_argument& e) {
    // "attention::scaled_dot_product_attention: options.scale (= nan) must be ...": keep the part
    // after the function's name.
    const std::string what = e.what();
    const std::size_t colon = what.find(": ");
    options_error = colon == std::string::npos ? what : what.substr(colon + 2);
    s[options_rejected] = 1;
  }
  return s;
}

inline std::string describe_options(const Summary& s) {
  std::ostringstream os;
  os << "scale ";
  if (s[scale_set]) {
    os << "= " << double_of(s[scale_bits]);
  } else {
    os << "unset";
  }
  os << ", softcap ";
  if (s[softcap_set]) {
    os << "= " << double_of(s[softcap_bits]);
  } else {
    os << "unset";
  }
  return os.str();
}

/// Builds "attention::mpi::<func>: <text>" messages.
class Complaint {
 public:
  explicit Complaint(const char* func) { os_ << "attention::mpi::" << func << ": "; }
  template <typename T>
  Complaint& operator<<(const T& x) {
    os_ << x;
    return *this;
  }
  [[noreturn]] void shape() const { throw ShapeError(os_.str()); }
  [[noreturn]] void invalid() const { throw std::invalid_argument(os_.str()); }

 private:
  std::ostringstream os_;
};

/// The checks, run identically on every rank over every rank's Summary, so that every rank reaches
/// the same verdict and throws the same message.
inline void judge(const char* func, const std::vector<Summary>& all,
                  const std::string& options_error) {
  const Summary& first = all[0];
  const int ranks = static_cast<int>(all.size());
  // 1. Every rank makes the same call.
  for (int r = 1; r < ranks; ++r) {
    const Summary& s = all[static_cast<std::size_t>(r)];
    if (s[call_kind] != first[call_kind]) {
      const auto name = [](std::int64_t kind) {
        return kind == static_cast<std::int64_t>(CallKind::backward)
                   ? "ring_attention_backward"
                   : "a forward (ring_attention or ring_attention_lse)";
      };
      (Complaint(func) << "rank " << r << " calls " << name(s[call_kind]) << " but rank 0 "
                       << name(first[call_kind]))
          .invalid();
    }
    if (s[scalar_bytes] != first[scalar_bytes]) {
      const auto name = [](std::int64_t bytes) { return bytes == 4 ? "float" : "double"; };
      (Complaint(func) << "rank " << r << " passes " << name(s[scalar_bytes]) << " but rank 0 "
                       << name(first[scalar_bytes]))
          .invalid();
    }
    if (s[causal_mask] != first[causal_mask]) {
      const auto name = [](std::int64_t causal) { return causal ? "attention::causal" : "NoMask"; };
      (Complaint(func) << "rank " << r << " passes " << name(s[causal_mask]) << " but rank 0 "
                       << name(first[causal_mask]))
          .invalid();
    }
    if (s[layout] != first[layout]) {
      const auto name = [](std::int64_t zigzag) {
        return zigzag ? "Layout::zigzag" : "Layout::contiguous";
      };
      (Complaint(func) << "rank " << r << " asks for " << name(s[layout]) << " but rank 0 for "
                       << name(first[layout]))
          .invalid();
    }
    if (s[scale_set] != first[scale_set] || s[scale_bits] != first[scale_bits] ||
        s[softcap_set] != first[softcap_set] || s[softcap_bits] != first[softcap_bits]) {
      (Complaint(func) << "rank " << r << "'s options (" << describe_options(s)
                       << ") differ from rank 0's (" << describe_options(first) << ")")
          .invalid();
    }
  }
  // 2. The options themselves (the same on every rank by now, so is the verdict).
  if (first[options_rejected]) (Complaint(func) << options_error).invalid();

  // 3. Each rank's own shapes.
  const bool backward = first[call_kind] == static_cast<std::int64_t>(CallKind::backward);
  const bool causal = first[causal_mask] != 0;
  const auto require = [func](bool ok, int r, const char* what, std::int64_t value,
                              const char* relation, const char* other, std::int64_t other_value) {
    if (!ok) {
      (Complaint(func) << "rank " << r << "'s " << what << " (= " << value << ") " << relation
                       << ' ' << other << " (= " << other_value << ')')
          .shape();
    }
  };
  for (int r = 0; r < ranks; ++r) {
    const Summary& s = all[static_cast<std::size_t>(r)];
    const auto positive = [&](Field f, const char* what) {
      if (s[f] < 1)
        (Complaint(func) << "rank " << r << "'s " << what << " (= " << s[f]
                         << ") must be at least 1")
            .shape();
    };
    positive(q_rows, "q_local.rows()");
    positive(q_cols, "q_local.cols() (d_k)");
    positive(k_rows, "k_local.rows()");
    positive(v_cols, "v_local.cols() (d_v)");
    require(s[k_cols] == s[q_cols], r, "k_local.cols()", s[k_cols], "must equal its",
            "q_local.cols()", s[q_cols]);
    require(s[v_rows] == s[k_rows], r, "v_local.rows()", s[v_rows], "must equal its",
            "k_local.rows()", s[k_rows]);
    if (backward) {
      require(s[out_rows] == s[q_rows], r, "out_local.rows()", s[out_rows], "must equal its",
              "q_local.rows()", s[q_rows]);
      require(s[out_cols] == s[v_cols], r, "out_local.cols()", s[out_cols], "must equal its",
              "v_local.cols()", s[v_cols]);
      require(s[lse_size] == s[q_rows], r, "lse_local.size()", s[lse_size], "must equal its",
              "q_local.rows()", s[q_rows]);
      require(s[d_out_rows] == s[q_rows], r, "d_out_local.rows()", s[d_out_rows], "must equal its",
              "q_local.rows()", s[q_rows]);
      require(s[d_out_cols] == s[v_cols], r, "d_out_local.cols()", s[d_out_cols], "must equal its",
              "v_local.cols()", s[v_cols]);
    }
    if (causal) {
      // Self-attention over global positions: a rank's queries and keys are the same tokens.
      require(s[k_rows] == s[q_rows], r, "k_local.rows()", s[k_rows],
              "must equal (attention::causal: q and k/v shards cover the same positions) its",
              "q_local.rows()", s[q_rows]);
    }
    constexpr std::int64_t int_max = std::numeric_limits<int>::max();
    for (Field f : {q_rows, k_rows, q_cols, v_cols}) {
      require(s[f] <= int_max, r,
              f == q_rows   ? "q_local.rows()"
              : f == k_rows ? "k_local.rows()"
              : f == q_cols ? "q_local.cols()"
                            : "v_local.cols()",
              s[f], "must not exceed", "the largest MPI count", int_max);
    }
  }
  // 4. Across ranks: one d_k and one d_v.
  for (int r = 1; r < ranks; ++r) {
    const Summary& s = all[static_cast<std::size_t>(r)];
    require(s[q_cols] == first[q_cols], r, "q_local.cols() (d_k)", s[q_cols], "must equal",
            "rank 0's", first[q_cols]);
    require(s[v_cols] == first[v_cols], r, "v_local.cols() (d_v)", s[v_cols], "must equal",
            "rank 0's", first[v_cols]);
  }
  // 5. Layout::zigzag: 2P equal chunks, two per rank.
  if (first[layout]) {
    const std::int64_t chunks = 2 * std::int64_t{ranks};
    for (Field f : {q_rows, k_rows}) {
      const char* name = f == q_rows ? "q_local.rows()" : "k_local.rows()";
      std::int64_t total = 0;
      for (const Summary& s : all) total += s[f];
      if (total % chunks != 0) {
        (Complaint(func) << "Layout::zigzag cuts the sequence into 2P (= " << chunks
                         << ") equal chunks, but its length N (= " << total << ", the sum of "
                         << name << " over the ranks) is not a multiple of " << chunks)
            .shape();
      }
      for (int r = 0; r < ranks; ++r) {
        const Summary& s = all[static_cast<std::size_t>(r)];
        require(s[f] == total / ranks, r, name, s[f],
                "must be two chunks of N / 2P rows (Layout::zigzag), i.e.", "N / P", total / ranks);
      }
    }
  }
  // 6. The backward needs finite inputs (see ring_attention_backward).
  for (int r = 0; r < ranks; ++r) {
    const Summary& s = all[static_cast<std::size_t>(r)];
    for (int bit = 0; bit < 6; ++bit) {
      if (s[non_finite] & (std::int64_t{1} << bit)) {
        (Complaint(func) << "rank " << r << "'s " << input_names[bit]
                         << " holds a NaN or an infinity; ring_attention_backward needs finite "
                            "inputs")
            .invalid();
      }
    }
  }
}

/// Gathers every rank's Summary and judges them (the only communication before the checks pass).
inline std::vector<Summary> exchange_and_check(const char* func, const Communicator& comm,
                                               const Summary& mine,
                                               const std::string& options_error) {
  std::vector<Summary> all(static_cast<std::size_t>(comm.size()));
  check_mpi(MPI_Allgather(mine.data(), field_count, MPI_INT64_T, all.data(), field_count,
                          MPI_INT64_T, comm.get()),
            "MPI_Allgather");
  judge(func, all, options_error);
  return all;
}

/// Rows per rank of field f.
inline std::vector<Index> rows_per_rank(const std::vector<Summary>& all, Field f) {
  std::vector<Index> rows;
  rows.reserve(all.size());
  for (const Summary& s : all) rows.push_back(static_cast<Index>(s[f]));
  return rows;
}

[[noreturn]] inline void abort_ring(const Communicator& comm, const char* func, const char* what) {
  std::fprintf(stderr,
               "attention::mpi::%s: rank %d failed while blocks were in flight (%s); aborting the "
               "job, since the other ranks would wait for it forever\n",
               func, comm.rank(), what);
  std::fflush(stderr);
  MPI_Abort(comm.get(), 1);
  std::abort();
}

// --- The key/value ring
// ---------------------------------------------------------------------------

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
  const bool finite[] = {q.allFinite(),   k.allFinite(),   v.allFinite(),
                         out.allFinite(), lse.allFinite(), d_out.allFinite()};
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

}  // namespace detail

/// Ring attention, returning each row's log-sum-exp too (see PartialAttention, partial.hpp): every
/// rank passes its own rows of q, k and v and gets its own rows of
///   out = softmax(scale * Q K^T + mask) V
/// over the whole sequence (Q, K, V: every rank's rows, in the order ring_options.layout gives),
/// with the lse the single-process scaled_dot_product_attention_lse would return for those rows;
/// equal to it up to the kernel's rounding and that of the merges. Collective over `comm`: every
/// rank calls it, with the same mask, options and layout.
///
/// Masks: NoMask (q and k/v shards may differ in length: cross-attention), or attention::causal
/// over global positions (self-attention: each rank's q and k/v shards are the same tokens, so
/// q_local.rows() == k_local.rows()); any other mask fails to compile. Query position i sees key
/// position j iff j <= i, whatever the layout; a rank skips the blocks its queries cannot see.
/// Layouts: Layout::contiguous (rank r holds consecutive rows in rank order; shard sizes may
/// differ) or Layout::zigzag (2P equal chunks, rank r holding chunks r and 2P - 1 - r in that
/// order; N must be a multiple of 2P).
///
/// Non-finite inputs follow the single-process rule (a NaN or infinity reaches the rows that see
/// it, and no other). Any Eigen expression is accepted; column-major inputs are copied once.
/// \throws ShapeError on every rank if any rank's sizes are inconsistent (zero rows, d_k or d_v
/// differing between its own matrices or from rank 0's, causal shards with q and k of different
/// lengths, zigzag with N not a multiple of 2P or unequal shards), naming the rank and the sizes;
/// std::invalid_argument on every rank if the ranks disagree on the function, scalar type, mask,
/// layout or options, or if the options are invalid; std::logic_error if MPI is not initialised.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] PartialAttention<typename DerivedQ::Scalar> ring_attention_lse(
    MPI_Comm comm, const Eigen::MatrixBase<DerivedQ>& q_local,
    const Eigen::MatrixBase<DerivedK>& k_local, const Eigen::MatrixBase<DerivedV>& v_local,
    const Mask& /*mask*/ = {}, const Options& options = {}, const RingOptions& ring_options = {}) {
  detail::check_ring_types<Mask, DerivedQ, DerivedK, DerivedV>();
  return detail::ring_forward<typename DerivedQ::Scalar, Mask>(
      "ring_attention_lse", comm, q_local, k_local, v_local, options, ring_options);
}

/// Ring attention: this rank's rows of softmax(scale * Q K^T + mask) V over the whole sequence.
/// Same arguments, rules and exceptions as ring_attention_lse.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] Matrix<typename DerivedQ::Scalar> ring_attention(
    MPI_Comm comm, const Eigen::MatrixBase<DerivedQ>& q_local,
    const Eigen::MatrixBase<DerivedK>& k_local, const Eigen::MatrixBase<DerivedV>& v_local,
    const Mask& /*mask*/ = {}, const Options& options = {}, const RingOptions& ring_options = {}) {
  detail::check_ring_types<Mask, DerivedQ, DerivedK, DerivedV>();
  return std::move(detail::ring_forward<typename DerivedQ::Scalar, Mask>(
                       "ring_attention", comm, q_local, k_local, v_local, options, ring_options)
                       .output);
}

/// Backward of ring attention: given this rank's rows of the forward's inputs, of its result
/// (out_local, lse_local: as ring_attention_lse returned them) and of the loss gradient
/// d_out_local, returns this rank's rows of dQ, dK and dV for the whole sequence (grads.dbias stays
/// empty):
///   dV = Pᵀ dO,  dS = P ∘ (dO Vᵀ − rowsum(dO ∘ O)),  dQ = scale · dS K,  dK = scale · dSᵀ Q
/// equal, up to rounding, to the single-process scaled_dot_product_attention_backward(q, k, v, out,
/// lse, d_out, mask, options) on the gathered matrices. Each key/value block travels the ring with
/// its dK and dV sums, each rank adding its queries' share, so that they arrive back at the block's
/// owner; memory stays O((N / P) d). Same masks, layouts and collective rules as the forward.
///
/// Inputs must be finite: the per-block backward recomputes the weights as exp(s − lse) from the
/// global lse, which is exact only for finite scores, and the single-process rule for NaN and
/// infinities (only pairs of non-zero weight take part) needs each row's weights over all keys at
/// once. A NaN or infinity in any rank's input therefore makes every rank throw
/// std::invalid_argument naming the rank and the input, rather than return gradients that
/// differ from the single-process ones.
/// \throws ShapeError as ring_attention_lse, or if out_local is not q rows x d_v, lse_local does
/// not have one entry per query or d_out_local is not q rows x d_v, on any rank;
/// std::invalid_argument as ring_attention_lse, or for a non-finite input.
template <typename DerivedQ, typename DerivedK, typename DerivedV, typename DerivedO,
          typename DerivedLse, typename DerivedDO, typename Mask = NoMask,
          std::enable_if_t<is_mask_v<Mask>, int> = 0>
[[nodiscard]] AttentionGradients<typename DerivedQ::Scalar> ring_attention_backward(
    MPI_Comm comm, const Eigen::MatrixBase<DerivedQ>& q_local,
    const Eigen::MatrixBase<DerivedK>& k_local, const Eigen::MatrixBase<DerivedV>& v_local,
    const Eigen::MatrixBase<DerivedO>& out_local, const Eigen::MatrixBase<DerivedLse>& lse_local,
    const Eigen::MatrixBase<DerivedDO>& d_out_local, const Mask& /*mask*/ = {},
    const Options& options = {}, const RingOptions& ring_options = {}) {
  using Scalar = typename DerivedQ::Scalar;
  detail::check_ring_types<Mask, DerivedQ, DerivedK, DerivedV, DerivedO, DerivedLse, DerivedDO>();
  const Eigen::Matrix<Scalar, Eigen::Dynamic, 1> lse = lse_local.reshaped();
  return detail::ring_backward<Scalar, Mask>("ring_attention_backward", comm, q_local, k_local,
                                             v_local, out_local, lse, d_out_local, options,
                                             ring_options);
}

}  // namespace attention::mpi
