#pragma once
// SPDX-License-Identifier: MIT
//
// The mask protocol: what the attention functions ask of a mask, and so what a type of your own
// must offer to be passed as one. Every mask of the library is written against it (the overview is
// in mask.hpp), and nothing needs registering: a type with these members is a mask
// (attention::is_mask_v<T>), every function that takes a `mask` accepts it, and `&` combines it
// with the others. A type that lacks a member fails to compile with a static_assert naming it.
//
// L is the number of queries (q.rows()), S the number of keys (k.rows()). A mask is a copyable
// type (`&` keeps copies) with the const members
//
//   void check(const char* func, Index L, Index S) const;
//     Throws (attention::ShapeError, whose message starts "attention::" + func) if it cannot mask
//     an L x S score matrix. Every entry point calls it before any work.
//
//   TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const;
//     What the mask does to the tile of rows [row0, row0 + rows) (queries) and columns
//     [col0, col0 + cols) (keys) of the L x S score matrix, in absolute indices. hidden: every
//     score of the tile is masked (the kernels skip the tile); visible: nothing to mask and nothing
//     to add (the kernels skip apply()); mixed otherwise. hidden and visible must be exact claims:
//     when unsure, answer mixed. A single entry is never partly hidden, so a 1 x 1 tile must be
//     answered hidden exactly when its score is masked (combinations rely on it).
//
//   template <typename Scalar>
//   void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const;
//     `scores` points at the tile's (row0, col0) entry, rows `stride` apart. Sets masked scores to
//     -inf and adds biases; a score that is already -inf stays -inf (another mask of a combination
//     hid it). Called on mixed tiles, and on the whole L x S matrix by the materialising path.
//     Must not allocate (the tiled kernels promise no allocation per call).
//
// and, optionally,
//
//   Bound bind(Index L, Index S) const;
//     For a mask whose answers depend on L and S (lower-right alignment needs S - L). The kernels
//     call it once per call, after check(), and ask the returned object -- which must then have
//     visibility() and apply() -- about every tile. It is cheap to copy and may refer to the mask,
//     which outlives it. Without bind(), the mask answers itself. attention::bind_mask(mask, L, S)
//     does this choice, for a mask made of other masks.
//
// A complete mask of your own: every other key, the same for every query (key j visible iff j is
// even). The tests (tests/masks/protocol_test.cpp) check it against attention::keep() of the
// equivalent boolean matrix, forward and backward.
//
//   struct EveryOtherKey {
//     void check(const char*, attention::Index, attention::Index) const {}  // fits any L x S
//
//     attention::TileVisibility visibility(attention::Index, attention::Index,
//                                          attention::Index col0, attention::Index cols) const {
//       if (cols > 1) return attention::TileVisibility::mixed;  // an even and an odd key
//       return col0 % 2 == 0 ? attention::TileVisibility::visible
//                            : attention::TileVisibility::hidden;
//     }
//
//     template <typename Scalar>
//     void apply(Scalar* scores, attention::Index stride, attention::Index, attention::Index rows,
//                attention::Index col0, attention::Index cols) const {
//       for (attention::Index r = 0; r < rows; ++r) {
//         // Tile column c is key col0 + c: the odd keys start at c = (col0 + 1) % 2.
//         for (attention::Index c = (col0 + 1) % 2; c < cols; c += 2) {
//           scores[r * stride + c] = -std::numeric_limits<Scalar>::infinity();
//         }
//       }
//     }
//   };
//
//   out = attention::scaled_dot_product_attention(q, k, v, EveryOtherKey{});
//   out = attention::scaled_dot_product_attention(q, k, v, EveryOtherKey{} & attention::causal);
//
// A tighter visibility() lets the kernels skip more work, but only mixed is ever required.

#include <Eigen/Core>
#include <type_traits>
#include <utility>

#include "attention/types.hpp"

namespace attention {

/// What a mask does to one tile of the score matrix.
enum class TileVisibility {
  hidden,   ///< every score masked: the tile contributes nothing and can be skipped
  visible,  ///< every score visible and nothing added: no mask work needed
  mixed,    ///< apply() must run on the tile (some scores masked, or biases to add)
};

/// No mask: every key is visible to every query. The default of every `mask` argument.
struct NoMask {
  /// Fits any L x S.
  void check(const char*, Index, Index) const {}
  /// Every tile: visible.
  [[nodiscard]] TileVisibility visibility(Index, Index, Index, Index) const {
    return TileVisibility::visible;
  }
  /// Nothing to mask (never called: no tile is mixed).
  template <typename Scalar>
  void apply(Scalar*, Index, Index, Index, Index, Index) const {}
};

namespace detail {

/// Whether `mask.bind(L, S)` can be called on a const Mask.
template <typename Mask, typename = void>
struct has_bind : std::false_type {};
template <typename Mask>
struct has_bind<Mask, std::void_t<decltype(std::declval<const Mask&>().bind(Index{}, Index{}))>>
    : std::true_type {};

}  // namespace detail

/// bind_mask(mask, L, S): mask.bind(L, S) for a mask that has bind(), else the mask itself (by
/// reference). What visibility() and apply() are asked of for an L x S score matrix (see the
/// protocol at the top of this header); a mask made of other masks binds each of them with it.
template <typename Mask>
[[nodiscard]] decltype(auto) bind_mask(const Mask& mask, Index num_queries, Index num_keys) {
  if constexpr (detail::has_bind<Mask>::value) {
    return mask.bind(num_queries, num_keys);
  } else {
    return (mask);  // const Mask&
  }
}

namespace detail {

using attention::bind_mask;  // the kernels' spelling

/// The type visibility() and apply() are asked of: what bind() returns, or the mask itself.
template <typename Mask>
using bound_mask_t =
    std::decay_t<decltype(bind_mask(std::declval<const Mask&>(), Index{}, Index{}))>;

// One detector per member of the protocol, so that a failed check can name the member.

template <typename Mask, typename = void>
struct has_check : std::false_type {};
template <typename Mask>
struct has_check<Mask, std::void_t<decltype(std::declval<const Mask&>().check(
                           std::declval<const char*>(), Index{}, Index{}))>> : std::true_type {};

template <typename Bound, typename = void>
struct has_visibility : std::false_type {};
template <typename Bound>
struct has_visibility<
    Bound, std::enable_if_t<std::is_convertible_v<decltype(std::declval<const Bound&>().visibility(
                                                      Index{}, Index{}, Index{}, Index{})),
                                                  TileVisibility>>> : std::true_type {};

template <typename Bound, typename Scalar, typename = void>
struct has_apply_for : std::false_type {};
template <typename Bound, typename Scalar>
struct has_apply_for<Bound, Scalar,
                     std::void_t<decltype(std::declval<const Bound&>().apply(
                         std::declval<Scalar*>(), Index{}, Index{}, Index{}, Index{}, Index{}))>>
    : std::true_type {};

/// apply() for scores of type Scalar; Scalar = void asks for any of float, double, long double.
template <typename Bound, typename Scalar>
constexpr bool has_apply() {
  if constexpr (std::is_void_v<Scalar>) {
    return has_apply_for<Bound, float>::value || has_apply_for<Bound, double>::value ||
           has_apply_for<Bound, long double>::value;
  } else {
    return has_apply_for<Bound, Scalar>::value;
  }
}

template <typename Mask, typename Scalar>
inline constexpr bool meets_mask_protocol_v =
    has_check<Mask>::value&& has_visibility<bound_mask_t<Mask>>::value&&
    has_apply<bound_mask_t<Mask>, Scalar>();

}  // namespace detail

/// Whether T is a mask: has the members of the protocol at the top of this header (check,
/// visibility, apply for some floating-point type; visibility and apply on what bind() returns if
/// it has bind). Derived from the members alone: no specialisation is needed.
template <typename T>
struct is_mask : std::bool_constant<detail::meets_mask_protocol_v<T, void>> {};

/// is_mask<T>::value, for T with or without const and reference.
template <typename T>
inline constexpr bool is_mask_v = is_mask<std::decay_t<T>>::value;

namespace detail {

/// Masks were once registered by specialising detail::is_mask; they are now recognised by their
/// members (attention::is_mask), and such specialisations, still accepted, change nothing.
template <typename T>
struct is_mask : attention::is_mask<T> {};

/// The base test of Eigen's dense objects, by deduction (so no Eigen class is instantiated for T).
template <typename Derived>
std::true_type is_eigen_dense_test(const Eigen::DenseBase<Derived>*);
std::false_type is_eigen_dense_test(const void*);

/// True for Eigen dense objects (matrices, arrays, maps, blocks, expressions, DenseBase<D> itself).
template <typename T>
inline constexpr bool is_eigen_dense_v =
    std::is_class_v<std::decay_t<T>>&& decltype(is_eigen_dense_test(
        std::declval<std::decay_t<T>*>()))::value;

/// True for an argument the attention functions read as a mask: anything but an Eigen object,
/// which in the same position is an input or the caller's `out`. Their overloads are told apart
/// by this, and the chosen one then checks the protocol (checked_mask), so that a type missing a
/// member gets a message naming it rather than "no matching function".
template <typename T>
inline constexpr bool is_mask_argument_v = !is_eigen_dense_v<T>;

/// One static_assert per member of the protocol, for scores of type Scalar (void: any).
template <typename Mask, typename Scalar>
constexpr bool static_check_mask() {
  using Bound = bound_mask_t<Mask>;
  static_assert(has_check<Mask>::value,
                "attention: this mask type has no member `void check(const char* func, Index L, "
                "Index S) const`, which every mask needs (the mask protocol: "
                "attention/masks/protocol.hpp)");
  static_assert(has_visibility<Bound>::value,
                "attention: this mask type has no member `TileVisibility visibility(Index row0, "
                "Index rows, Index col0, Index cols) const`, on the mask or on what its `bind(L, "
                "S) const` returns (the mask protocol: attention/masks/protocol.hpp)");
  static_assert(has_apply<Bound, Scalar>(),
                "attention: this mask type has no member `template <typename Scalar> void "
                "apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index "
                "cols) const` for the scalar type of q, k and v, on the mask or on what its "
                "`bind(L, S) const` returns (the mask protocol: attention/masks/protocol.hpp)");
  return meets_mask_protocol_v<Mask, Scalar>;
}

/// What an entry point masks with: `mask` itself once static_check_mask passes; after a failed
/// static_assert, a NoMask, so that the compiler reports the missing member and nothing more.
template <typename Scalar, typename Mask>
[[nodiscard]] decltype(auto) checked_mask(const Mask& mask) {
  if constexpr (static_check_mask<Mask, Scalar>()) {
    return (mask);  // const Mask&
  } else {
    return NoMask{};
  }
}

}  // namespace detail
}  // namespace attention
