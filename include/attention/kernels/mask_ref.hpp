#pragma once
// SPDX-License-Identifier: MIT
//
// MaskRef: a bound mask (attention::bind_mask) seen through two function pointers, which is what
// the kernel entry points hand to the ISA-dependent bodies (dispatch.hpp). The bodies are then
// compiled once per scalar type and instruction-set path, not once per mask type as well: a
// program with ten mask types and three paths compiles three copies of the tile loops, not
// thirty. A mask's visibility() is asked once per tile and its apply() runs on mixed tiles only,
// so the indirect call costs nothing next to a tile's q k^T (block_rows x block_cols x d
// multiply-adds). Not ISA-dependent: the mask's own members are compiled for the compiler's flags.

#include <type_traits>
#include <utility>

#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Refers to a bound mask (which must outlive it) and forwards the mask protocol's visibility() and
/// apply() (masks/protocol.hpp) to it. Has no bind(): bind_mask(ref, L, S) is the ref itself.
template <typename Scalar>
class MaskRef {
 public:
  template <typename Bound>
  explicit MaskRef(const Bound& bound)
      : bound_(&bound),
        visibility_([](const void* m, Index row0, Index rows, Index col0, Index cols) {
          return static_cast<const Bound*>(m)->visibility(row0, rows, col0, cols);
        }),
        apply_([](const void* m, Scalar* s, Index lds, Index row0, Index rows, Index col0,
                  Index cols) {
          static_cast<const Bound*>(m)->apply(s, lds, row0, rows, col0, cols);
        }) {}

  [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
    return visibility_(bound_, row0, rows, col0, cols);
  }
  void apply(Scalar* s, Index lds, Index row0, Index rows, Index col0, Index cols) const {
    apply_(bound_, s, lds, row0, rows, col0, cols);
  }

 private:
  const void* bound_;
  TileVisibility (*visibility_)(const void*, Index, Index, Index, Index);
  void (*apply_)(const void*, Scalar*, Index, Index, Index, Index, Index);
};

/// The MaskRef of `mask` bound to an L x S score matrix: `bound` holds what bind_mask returned
/// (a reference to the mask itself, or its bound form by value), `ref` refers to it.
template <typename Scalar, typename Mask>
struct BoundMaskRef {
  using Bound = std::decay_t<decltype(bind_mask(std::declval<const Mask&>(), Index{}, Index{}))>;
  std::conditional_t<detail::has_bind<Mask>::value, Bound, const Bound&> bound;
  MaskRef<Scalar> ref;

  BoundMaskRef(const Mask& mask, Index num_queries, Index num_keys)
      : bound(bind_mask(mask, num_queries, num_keys)), ref(bound) {}
  BoundMaskRef(const BoundMaskRef&) = delete;
  BoundMaskRef& operator=(const BoundMaskRef&) = delete;
};

}  // namespace attention::detail::kernels
