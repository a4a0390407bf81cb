#pragma once
// SPDX-License-Identifier: MIT

#include "attention/kernels/workspace.hpp"
#include "attention/low_precision.hpp"

namespace attention {

/// Scratch memory for the tiled kernel that the caller owns and reuses, so that repeated calls
/// allocate nothing: pass it to scaled_dot_product_attention(q, k, v, out, workspace, mask,
/// options). Its buffers grow to the largest call seen (about (S + 2 * 64 * threads) * (d_k + d_v)
/// scalars) and are kept. Not thread-safe: one workspace per concurrent caller. Scalar is q's type;
/// for Eigen::bfloat16 and Eigen::half (and float q with such k and v) it also keeps the float
/// copies of the low-precision operands (low_precision.hpp).
template <typename Scalar>
class AttentionWorkspace {
 public:
  AttentionWorkspace() = default;

  /// The kernel's buffers (internal: their layout may change between versions).
  [[nodiscard]] detail::kernels::CallWorkspace<compute_type_t<Scalar>>& buffers() { return call_; }

  /// Float copies of low-precision operands (internal: may change between versions).
  [[nodiscard]] detail::LowPrecisionStaging& staging() { return staging_; }

 private:
  detail::kernels::CallWorkspace<compute_type_t<Scalar>> call_;
  detail::LowPrecisionStaging staging_;
};

}  // namespace attention
