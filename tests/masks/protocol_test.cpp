// SPDX-License-Identifier: MIT
// Tests for attention/masks/protocol.hpp: masks of the user's own, recognised by their members
// alone (attention::is_mask_v), accepted by every entry point and combined by `&`. The example of
// the header's top comment (every other key) and a mask with bind() (the last n keys) are checked
// against attention::keep() of the equivalent boolean matrix, which tests/masks/matrix_test.cpp
// checks against the reference; a type missing a member is not a mask, and the compile-time
// message that names it is checked by protocol_compile_errors.cpp (tests/CMakeLists.txt).

#include <gtest/gtest.h>

#include <attention/masks/combination.hpp>
#include <attention/masks/matrix.hpp>
#include <attention/masks/positional.hpp>
#include <attention/masks/protocol.hpp>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "support/incomplete_masks.hpp"
#include "support/mask_checks.hpp"

// The example of masks/protocol.hpp's top comment (the same code, formatted for this file).
struct EveryOtherKey {
  void check(const char*, attention::Index, attention::Index) const {}  // fits any L x S

  attention::TileVisibility visibility(attention::Index, attention::Index, attention::Index col0,
                                       attention::Index cols) const {
    if (cols > 1) return attention::TileVisibility::mixed;  // an even and an odd key
    return col0 % 2 == 0 ? attention::TileVisibility::visible : attention::TileVisibility::hidden;
  }

  template <typename Scalar>
  void apply(Scalar* scores, attention::Index stride, attention::Index, attention::Index rows,
             attention::Index col0, attention::Index cols) const {
    for (attention::Index r = 0; r < rows; ++r) {
      // Tile column c is key col0 + c: the odd keys start at c = (col0 + 1) % 2.
      for (attention::Index c = (col0 + 1) % 2; c < cols; c += 2) {
        scores[r * stride + c] = -std::numeric_limits<Scalar>::infinity();
      }
    }
  }
};

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::TileVisibility;
using support::BoolMatrix;

/// A user mask that needs S: only the last n keys are visible, j >= S - n. Its bind(L, S) returns
/// the bound form, which answers visibility() and apply().
class LastKeys {
 public:
  explicit LastKeys(Index n) : n_(n) {}

  void check(const char* func, Index, Index num_keys) const {
    if (n_ > num_keys) throw attention::ShapeError(std::string("attention::") + func + ": n > S");
  }

  struct Bound {
    Index first_visible;  // S - n

    TileVisibility visibility(Index, Index, Index col0, Index cols) const {
      if (col0 >= first_visible) return TileVisibility::visible;
      return col0 + cols <= first_visible ? TileVisibility::hidden : TileVisibility::mixed;
    }
    template <typename Scalar>
    void apply(Scalar* scores, Index stride, Index, Index rows, Index col0, Index cols) const {
      for (Index r = 0; r < rows; ++r) {
        for (Index c = 0; c < cols && col0 + c < first_visible; ++c) {
          scores[r * stride + c] = -std::numeric_limits<Scalar>::infinity();
        }
      }
    }
  };

  Bound bind(Index, Index num_keys) const { return {num_keys - n_}; }

 private:
  Index n_;
};

using support::ApplyForFloatOnly;
using support::BindWithoutVisibility;
using support::NoApply;
using support::NoCheck;
using support::NonConstVisibility;
using support::NoVisibility;

static_assert(attention::is_mask_v<EveryOtherKey>);
static_assert(attention::is_mask_v<const EveryOtherKey&>);
static_assert(attention::is_mask_v<LastKeys>);
static_assert(attention::is_mask_v<ApplyForFloatOnly>);
static_assert(attention::is_mask_v<decltype(EveryOtherKey{} & attention::causal)>);
static_assert(attention::is_mask_v<decltype(attention::window(3, 0) & LastKeys(2))>);
static_assert(!attention::is_mask_v<NoCheck>);
static_assert(!attention::is_mask_v<NoVisibility>);
static_assert(!attention::is_mask_v<NoApply>);
static_assert(!attention::is_mask_v<NonConstVisibility>);
static_assert(!attention::is_mask_v<BindWithoutVisibility>);
static_assert(!attention::is_mask_v<int>);
// The scalar-specific check the entry points make: apply() for the scalar type of q, k and v.
static_assert(attention::detail::meets_mask_protocol_v<ApplyForFloatOnly, float>);
static_assert(!attention::detail::meets_mask_protocol_v<ApplyForFloatOnly, double>);

}  // namespace

// Masks were once registered by specialising detail::is_mask: such code still compiles, and a
// registration changes nothing (the members decide).
namespace attention::detail {
template <>
struct is_mask<EveryOtherKey> : std::true_type {};
template <>
struct is_mask<support::NoApply> : std::true_type {};
}  // namespace attention::detail
static_assert(attention::is_mask_v<EveryOtherKey>);
static_assert(!attention::is_mask_v<support::NoApply>);

namespace {

/// keep() of what EveryOtherKey shows (& causal if asked): key j visible iff j is even.
BoolMatrix every_other_key(Index num_queries, Index num_keys, bool causal = false) {
  BoolMatrix visible(num_queries, num_keys);
  for (Index i = 0; i < num_queries; ++i) {
    for (Index j = 0; j < num_keys; ++j) visible(i, j) = j % 2 == 0 && (!causal || j <= i);
  }
  return visible;
}

/// keep() of what LastKeys(n) shows.
BoolMatrix last_keys(Index num_queries, Index num_keys, Index n) {
  BoolMatrix visible(num_queries, num_keys);
  for (Index i = 0; i < num_queries; ++i) {
    for (Index j = 0; j < num_keys; ++j) visible(i, j) = j >= num_keys - n;
  }
  return visible;
}

TEST(BindMask, IsTheMaskItselfWithoutBind) {
  const EveryOtherKey mask;
  const auto& bound = attention::bind_mask(mask, 4, 9);
  EXPECT_EQ(&bound, &mask);
  // With bind(): its result, here for L = 4, S = 9, n = 3.
  EXPECT_EQ(attention::bind_mask(LastKeys(3), 4, 9).first_visible, 6);
}

TEST(UserMask, ClassifiesEveryTileExactly) {
  for (const Index tile : {1, 2, 5, 16}) {
    support::expect_exact_classification(EveryOtherKey{}, 40, 53, tile, tile);
    support::expect_exact_classification(LastKeys(20), 40, 53, tile, tile + 1);
    support::expect_exact_classification(EveryOtherKey{} & attention::causal, 40, 53, tile, tile);
  }
}

/// `mask` and keep(`visible`) through the forward entry points: scaled_dot_product_attention
/// (allocating and into `out`), _lse and attention_weights; masked weights exactly 0.
template <typename Scalar, typename Mask>
void expect_forward_as_keep(const Mask& mask, const BoolMatrix& visible, unsigned seed) {
  const Index l = visible.rows(), s = visible.cols();
  SCOPED_TRACE(::testing::Message() << "L = " << l << ", S = " << s);
  const Matrix<Scalar> q = support::random_matrix<Scalar>(l, 16, seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(s, 16, seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(s, 12, seed + 2);
  const attention::KeepMask as_keep = attention::keep(visible);
  const long double tol = support::mask_tolerance<Scalar>();
  const Matrix<Scalar> expected = attention::scaled_dot_product_attention(q, k, v, as_keep);
  EXPECT_TRUE(
      support::is_near(attention::scaled_dot_product_attention(q, k, v, mask), expected, tol));
  Matrix<Scalar> out(l, 12);
  attention::scaled_dot_product_attention(q, k, v, out, mask);
  EXPECT_TRUE(support::is_near(out, expected, tol));
  const auto with_lse = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  const auto keep_lse = attention::scaled_dot_product_attention_lse(q, k, v, as_keep);
  EXPECT_TRUE(support::is_near(with_lse.output, expected, tol));
  EXPECT_TRUE(support::is_near(with_lse.lse, keep_lse.lse, tol));
  const Matrix<Scalar> weights = attention::attention_weights(q, k, mask);
  EXPECT_TRUE(support::is_near(weights, attention::attention_weights(q, k, as_keep), tol));
  for (Index i = 0; i < l; ++i) {
    for (Index j = 0; j < s; ++j) {
      if (!visible(i, j)) {
        EXPECT_EQ(weights(i, j), Scalar(0)) << i << ", " << j;
      }
    }
  }
}

TYPED_TEST(MaskForward, UserMaskEqualsKeep) {
  using Scalar = TypeParam;
  // Sizes around the tiles, L != S both ways, and L = 1 against 700 keys (the decode path).
  for (const auto& [l, s] : {std::pair<Index, Index>{70, 200}, {129, 97}, {1, 700}, {7, 7}}) {
    expect_forward_as_keep<Scalar>(EveryOtherKey{}, every_other_key(l, s), 10);
    expect_forward_as_keep<Scalar>(LastKeys(s / 3), last_keys(l, s, s / 3), 20);
    expect_forward_as_keep<Scalar>(EveryOtherKey{} & attention::causal, every_other_key(l, s, true),
                                   30);
    expect_forward_as_keep<Scalar>(attention::causal & EveryOtherKey{}, every_other_key(l, s, true),
                                   40);
  }
}

TEST(UserMask, CheckedByTheEntryPoints) {
  const Matrix<double> q = support::random_matrix<double>(3, 4, 1);
  EXPECT_THROW((void)attention::scaled_dot_product_attention(q, q, q, LastKeys(4)),
               attention::ShapeError);
  EXPECT_NO_THROW((void)attention::scaled_dot_product_attention(q, q, q, LastKeys(3)));
}

/// Both backward passes with `mask` equal those with keep(`visible`); a key nobody sees gets
/// dk = dv = 0 exactly.
template <typename Scalar, typename Mask>
void expect_backward_as_keep(const Mask& mask, const BoolMatrix& visible, unsigned seed) {
  const Index l = visible.rows(), s = visible.cols();
  SCOPED_TRACE(::testing::Message() << "L = " << l << ", S = " << s);
  const Matrix<Scalar> q = support::random_matrix<Scalar>(l, 8, seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(s, 8, seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(s, 6, seed + 2);
  const Matrix<Scalar> d_out = support::random_matrix<Scalar>(l, 6, seed + 3);
  const attention::KeepMask as_keep = attention::keep(visible);
  const long double tol = std::is_same_v<Scalar, float> ? 2e-5L : 1e-13L;
  const auto forward = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  const auto expected = attention::scaled_dot_product_attention_backward(q, k, v, d_out, as_keep);
  for (const auto& grads : {attention::scaled_dot_product_attention_backward(q, k, v, d_out, mask),
                            attention::scaled_dot_product_attention_backward(
                                q, k, v, forward.output, forward.lse, d_out, mask)}) {
    EXPECT_TRUE(support::is_near(grads.dq, expected.dq, tol)) << "dq";
    EXPECT_TRUE(support::is_near(grads.dk, expected.dk, tol)) << "dk";
    EXPECT_TRUE(support::is_near(grads.dv, expected.dv, tol)) << "dv";
    EXPECT_EQ(grads.dbias.size(), 0);
    for (Index j = 0; j < s; ++j) {
      if (!visible.col(j).any()) {
        EXPECT_TRUE((grads.dk.row(j).array() == Scalar(0)).all()) << "dk row " << j;
        EXPECT_TRUE((grads.dv.row(j).array() == Scalar(0)).all()) << "dv row " << j;
      }
    }
  }
}

TYPED_TEST(MaskTiledBackward, UserMaskEqualsKeep) {
  using Scalar = TypeParam;
  for (const auto& [l, s] : {std::pair<Index, Index>{70, 200}, {129, 97}, {5, 5}}) {
    expect_backward_as_keep<Scalar>(EveryOtherKey{}, every_other_key(l, s), 50);
    expect_backward_as_keep<Scalar>(LastKeys(s / 2), last_keys(l, s, s / 2), 60);
    expect_backward_as_keep<Scalar>(EveryOtherKey{} & attention::causal,
                                    every_other_key(l, s, true), 70);
  }
}

}  // namespace
