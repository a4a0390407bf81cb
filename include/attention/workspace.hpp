#pragma once
// SPDX-License-Identifier: MIT

#include "attention/kernels/workspace.hpp"

namespace attention {

/// Scratch memory for the tiled kernel that the caller owns and reuses, so that repeated calls
/// allocate nothing: pass it to scaled_dot_product_attention(q, k, v, out, workspace, mask,
/// options). Its buffers grow to the largest call seen (about (S + 2 * 64 * threads) * (d_k + d_v)
/// scalars) and are kept. Not thread-safe: one workspace per concurrent caller.
template <typename Scalar>
class AttentionWorkspace {
 public:
  AttentionWorkspace() = default;

  /// The kernel's buffers (internal: their layout may change between versions).
  [[nodiscard]] detail::kernels::CallWorkspace<Scalar>& buffers() { return call_; }

 private:
  detail::kernels::CallWorkspace<Scalar> call_;
};

}  // namespace attention
