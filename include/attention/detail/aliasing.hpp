#pragma once
// SPDX-License-Identifier: MIT

#include <Eigen/Core>

#include "attention/types.hpp"

namespace attention::detail {

/// out = x, for kernels that then work in place on `out`. Skips the copy when x is `out` itself
/// (the documented in-place use), and evaluates x into a temporary first when it has no storage of
/// its own (an expression, which might read `out`) or is stored elsewhere in another layout.
template <typename Derived, typename Scalar>
void copy_unless_same(const Eigen::MatrixBase<Derived>& x, MatrixRef<Scalar>& out) {
  if constexpr ((Derived::Flags & Eigen::DirectAccessBit) != 0) {
    const Derived& dx = x.derived();
    const bool same_data =
        static_cast<const void*>(dx.data()) == static_cast<const void*>(out.data());
    const bool row_major = (Derived::Flags & Eigen::RowMajorBit) != 0 || dx.rows() <= 1;
    if (same_data && row_major && dx.innerStride() == 1 &&
        (dx.rows() <= 1 || dx.outerStride() == out.outerStride())) {
      return;  // in place
    }
    if (!same_data) {
      out = x;
      return;
    }
  }
  out = x.eval();
}

}  // namespace attention::detail
