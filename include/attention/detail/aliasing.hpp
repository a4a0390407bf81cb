#pragma once
// SPDX-License-Identifier: MIT
//
// Aliasing between a function's output and its inputs. Every public function that writes into a
// caller's storage checks, by address range, whether that storage overlaps an input it still has
// to read (in-place self-attention `scaled_dot_product_attention(x, x, x, x)`, `out = v`, rows of
// a cache appended to itself), and if so computes through a temporary. The check is O(1); the
// temporary is paid only by calls that alias.

#include <Eigen/Core>
#include <cstdint>

#include "attention/types.hpp"

namespace attention::detail {

/// True for an Eigen object with storage of its own (a matrix, map, block or Ref), whose addresses
/// can be compared; false for an expression, which may read anything.
template <typename Derived>
inline constexpr bool has_storage = (Derived::Flags & Eigen::DirectAccessBit) != 0;

/// The addresses [begin, end) from the first coefficient of x to just past its last; empty for x
/// without coefficients. x must have storage (has_storage).
struct AddressRange {
  std::uintptr_t begin = 0, end = 0;
};

template <typename Derived>
AddressRange address_range(const Eigen::DenseBase<Derived>& x) {
  static_assert(has_storage<Derived>, "address_range needs an object with storage");
  const Derived& d = x.derived();
  if (d.size() == 0) return {};
  const auto* first = d.data();
  const auto* last = first + (d.rows() - 1) * d.rowStride() + (d.cols() - 1) * d.colStride();
  return {reinterpret_cast<std::uintptr_t>(first), reinterpret_cast<std::uintptr_t>(last + 1)};
}

/// True if writing `out` may change what reading `in` gives: their address ranges intersect, or
/// either is an expression without storage (which might read `out`). Conservative: two
/// interleaved column blocks of one matrix count as overlapping.
template <typename Out, typename In>
bool may_overlap(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<In>& in) {
  if constexpr (has_storage<Out> && has_storage<In>) {
    const AddressRange a = address_range(out), b = address_range(in);
    return a.begin < a.end && b.begin < b.end && a.begin < b.end && b.begin < a.end;
  } else {
    return out.size() != 0 && in.size() != 0;
  }
}

/// may_overlap(out, in) for any of the inputs.
template <typename Out, typename... In>
bool may_overlap_any(const Eigen::DenseBase<Out>& out, const Eigen::DenseBase<In>&... in) {
  return (may_overlap(out, in) || ...);
}

/// True if a and b are the same coefficients in the same layout: a row-by-row kernel that reads
/// each entry before writing it at the same index may then run in place.
template <typename A, typename B>
bool same_storage(const Eigen::DenseBase<A>& a, const Eigen::DenseBase<B>& b) {
  if constexpr (has_storage<A> && has_storage<B>) {
    const A& x = a.derived();
    const B& y = b.derived();
    return static_cast<const void*>(x.data()) == static_cast<const void*>(y.data()) &&
           x.rows() == y.rows() && x.cols() == y.cols() &&
           (x.rows() <= 1 || x.rowStride() == y.rowStride()) &&
           (x.cols() <= 1 || x.colStride() == y.colStride());
  } else {
    return false;
  }
}

/// out = x, for kernels that then work in place on `out`. Skips the copy when x is `out` itself
/// (the documented in-place use), and evaluates x into a temporary first when it has no storage of
/// its own (an expression, which might read `out`) or overlaps `out` in another way.
template <typename Derived, typename Scalar>
void copy_unless_same(const Eigen::MatrixBase<Derived>& x, MatrixRef<Scalar>& out) {
  if (same_storage(x, out)) return;  // in place
  if (may_overlap(out, x)) {
    out = x.eval();
  } else {
    out = x;
  }
}

}  // namespace attention::detail
