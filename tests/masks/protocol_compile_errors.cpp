// SPDX-License-Identifier: MIT
// Must not compile. Each call below passes a type that lacks a member of the mask protocol
// (attention/masks/protocol.hpp); compiling must fail with one static_assert per call, naming the
// member, and nothing else. The test MaskProtocolNamesTheMissingMember (tests/CMakeLists.txt) runs
// tests/masks/expect_compile_errors.cmake, which compiles this file and checks that the output
// holds each "expect-error:" text below and exactly as many errors as there are such lines.
//
// clang-format off
// expect-error: this mask type has no member `void check(const char* func, Index L, Index S) const`
// expect-error: this mask type has no member `TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const`
// expect-error: this mask type has no member `template <typename Scalar> void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const` for the scalar type of q, k and v
// expect-error: this mask type has no member `template <typename Scalar> void apply(
// expect-error: this mask type has no member `TileVisibility visibility(
// clang-format on

#include <attention/attention.hpp>

#include "support/incomplete_masks.hpp"

using support::ApplyForFloatOnly;
using support::NoApply;
using support::NoCheck;
using support::NoVisibility;

int main() {
  const attention::RowMatrixXf q = attention::RowMatrixXf::Ones(4, 3);
  const attention::RowMatrixXd qd = attention::RowMatrixXd::Ones(4, 3);
  float sum = attention::scaled_dot_product_attention(q, q, q, NoCheck{}).sum();
  sum += attention::scaled_dot_product_attention_lse(q, q, q, NoVisibility{}).output.sum();
  sum += float(attention::attention_weights(qd, qd, NoApply{}).sum());
  // A mask for float scores given double ones:
  sum += float(attention::scaled_dot_product_attention_backward(qd, qd, qd, qd, ApplyForFloatOnly{})
                   .dq.sum());
  // `&` checks both sides:
  const auto both = attention::causal & NoVisibility{};
  (void)both;
  return sum > 0 ? 0 : 1;
}
