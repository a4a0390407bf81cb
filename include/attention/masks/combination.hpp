#pragma once
// SPDX-License-Identifier: MIT
//
// Combining masks: `a & b` lets query i see key j only where both a and b do, and adds the biases
// of both (a bias combines by addition). Combinations nest, `a & b & c`, and any two masks combine,
// a mask of your own included (masks/protocol.hpp), e.g.
//
//   attention::causal_lower_right & attention::alibi(slope)      ALiBi in a causal decoder
//   attention::window(4095, 0) & attention::keep(allowed)        a window and a pattern
//   attention::sequences(offsets).causal() & attention::bias(m)  packed sequences with a bias

#include <type_traits>
#include <utility>

#include "attention/masks/protocol.hpp"
#include "attention/types.hpp"

namespace attention {

/// Two masks at once, made by `a & b`: key j is visible to query i only where both masks let it
/// through, and the biases of both are added. The combination holds copies of a and b (keep() and
/// bias() masks share their matrix, they do not copy it).
template <typename A, typename B>
class BothMasks {
 public:
  /// Made by `a & b`.
  BothMasks(A a, B b) : a_(std::move(a)), b_(std::move(b)) {}

  /// a, the left operand of `a & b`.
  [[nodiscard]] const A& first() const { return a_; }
  /// b, the right operand of `a & b`.
  [[nodiscard]] const B& second() const { return b_; }

  /// Both parts' checks.
  void check(const char* func, Index num_queries, Index num_keys) const {
    a_.check(func, num_queries, num_keys);
    b_.check(func, num_queries, num_keys);
  }

  /// The bound form: both parts bound to (L, S) (see the protocol in masks/protocol.hpp).
  template <typename BoundA, typename BoundB>
  struct Bound {
    BoundA a;  ///< a bound, or a reference to a mask that is its own bound form
    BoundB b;  ///< b bound, likewise

    /// Hidden if either part hides the tile or if no entry passes both (found by halving the
    /// tile where both parts are mixed); visible if both are; mixed otherwise.
    [[nodiscard]] TileVisibility visibility(Index row0, Index rows, Index col0, Index cols) const {
      const TileVisibility va = a.visibility(row0, rows, col0, cols);
      if (va == TileVisibility::hidden) return TileVisibility::hidden;
      const TileVisibility vb = b.visibility(row0, rows, col0, cols);
      if (vb == TileVisibility::hidden) return TileVisibility::hidden;
      if (va == TileVisibility::visible && vb == TileVisibility::visible) {
        return TileVisibility::visible;
      }
      if (va == TileVisibility::visible || vb == TileVisibility::visible) {
        return TileVisibility::mixed;  // the other part shows some entry, all of which pass this
                                       // one
      }
      return visible_under_both(row0, rows, col0, cols) ? TileVisibility::mixed
                                                        : TileVisibility::hidden;
    }

    /// a's masking and biases, then b's. A score hidden by a stays -inf under b (protocol).
    template <typename Scalar>
    void apply(Scalar* scores, Index stride, Index row0, Index rows, Index col0, Index cols) const {
      a.apply(scores, stride, row0, rows, col0, cols);
      b.apply(scores, stride, row0, rows, col0, cols);
    }

   private:
    /// Whether some entry of the tile passes both parts, given that neither hides the tile.
    /// Two parts can each leave a tile partly visible and still share no visible entry (a band
    /// and a keep() pattern that lies outside it): the tile is halved, and a half that either
    /// part hides is dropped, until one part sees a half whole (the other shows something in it)
    /// or a single entry remains (the protocol makes 1 x 1 answers exact). Halving stops at the
    /// first shared entry, so a tile that is not empty costs a few calls along one path.
    [[nodiscard]] bool visible_under_both(Index row0, Index rows, Index col0, Index cols) const {
      if (rows == 1 && cols == 1) return true;
      const auto part = [&](Index r0, Index nr, Index c0, Index nc) {
        const TileVisibility va = a.visibility(r0, nr, c0, nc);
        if (va == TileVisibility::hidden) return false;
        const TileVisibility vb = b.visibility(r0, nr, c0, nc);
        if (vb == TileVisibility::hidden) return false;
        if (va == TileVisibility::visible || vb == TileVisibility::visible) return true;
        return visible_under_both(r0, nr, c0, nc);
      };
      if (rows >= cols) {
        const Index half = rows / 2;
        return part(row0, half, col0, cols) || part(row0 + half, rows - half, col0, cols);
      }
      const Index half = cols / 2;
      return part(row0, rows, col0, half) || part(row0, rows, col0 + half, cols - half);
    }
  };

  /// Both parts bound to L x S (Bound).
  [[nodiscard]] auto bind(Index num_queries, Index num_keys) const {
    using BoundA = decltype(bind_mask(a_, num_queries, num_keys));
    using BoundB = decltype(bind_mask(b_, num_queries, num_keys));
    return Bound<BoundA, BoundB>{bind_mask(a_, num_queries, num_keys),
                                 bind_mask(b_, num_queries, num_keys)};
  }

 private:
  A a_;
  B b_;
};

/// a & b: visible only where both masks are, biases added (see BothMasks and the top of
/// masks/combination.hpp); returns BothMasks<A, B> (without const or reference). Taken when either
/// side is a mask and neither is an Eigen object; the other side must then meet the mask protocol,
/// or a static_assert names the member it lacks.
template <typename A, typename B,
          std::enable_if_t<(is_mask_v<A> || is_mask_v<B>)&&detail::is_mask_argument_v<A> &&
                               detail::is_mask_argument_v<B>,
                           int> = 0>
[[nodiscard]] auto operator&(A&& a, B&& b) {
  if constexpr (detail::static_check_mask<std::decay_t<A>, void>() &&
                detail::static_check_mask<std::decay_t<B>, void>()) {
    return BothMasks<std::decay_t<A>, std::decay_t<B>>(std::forward<A>(a), std::forward<B>(b));
  } else {
    return NoMask{};  // after the failed static_assert, so that nothing more is reported
  }
}

}  // namespace attention
