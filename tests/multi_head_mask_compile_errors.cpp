// SPDX-License-Identifier: MIT
// Must not compile. MultiHeadAttention's calls and multi_head_attention_backward, given a type that
// lacks a member of the mask protocol (attention/masks/protocol.hpp), fail with one static_assert
// naming the member and nothing else, as scaled_dot_product_attention does
// (masks/protocol_compile_errors.cpp). The test MultiHeadMaskNamesTheMissingMember
// (tests/CMakeLists.txt) runs tests/masks/expect_compile_errors.cmake on this file. Each call uses
// another (mask, scalar) pair: a static_assert fires once per pair.
//
// clang-format off
// expect-error: this mask type has no member `void check(const char* func, Index L, Index S) const`
// expect-error: this mask type has no member `TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const`
// expect-error: this mask type has no member `template <typename Scalar> void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const` for the scalar type of q, k and v
// expect-error: this mask type has no member `template <typename Scalar> void apply(
// clang-format on

#include <attention/attention.hpp>

#include "support/incomplete_masks.hpp"

int main() {
  const attention::MultiHeadAttention<float> layer(8, 2);
  const attention::MultiHeadAttention<double> layer_d(8, 2);
  const attention::RowMatrixXf x = attention::RowMatrixXf::Ones(4, 8);
  const attention::RowMatrixXd xd = attention::RowMatrixXd::Ones(4, 8);
  attention::KVCache<float> cache(8, 16);
  float sum = layer.forward(x, support::NoCheck{}).sum();
  sum += layer.forward(x, cache, support::NoVisibility{}).sum();
  sum += float(layer_d.head_weights(xd, support::NoApply{})[0].sum());
  // A mask for float scores given double ones:
  sum +=
      float(attention::multi_head_attention_backward(layer_d, xd, xd, support::ApplyForFloatOnly{})
                .dx.sum());
  return sum > 0 ? 0 : 1;
}
