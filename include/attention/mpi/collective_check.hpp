#pragma once
// SPDX-License-Identifier: MIT
//
// The collective check of ring attention (<attention/mpi.hpp>): every rank summarises its call
// (shapes, mask, layout, options, finiteness) as integers, the summaries are gathered by every
// rank, and every rank judges all of them the same way, so that a bad argument on one rank makes
// every rank throw the same exception before any data moves, and none waits forever.

#include <Eigen/Core>
#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention/errors.hpp"
#include "attention/mpi/communication.hpp"
#include "attention/mpi/ring_schedule.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"

namespace attention::mpi::detail {

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
}  // namespace attention::mpi::detail
