// SPDX-License-Identifier: MIT
// Tests for attention/masks/sequences.hpp: packed variable-length sequences (sequences(), with
// .causal(), .window() and .key_padding()): each sequence of a packed call equals a separate call
// on its own rows, exact tile classification, the checks, and both backward passes.

#include <gtest/gtest.h>

#include <attention/masks/combination.hpp>
#include <attention/masks/matrix.hpp>
#include <attention/masks/sequences.hpp>
#include <limits>
#include <optional>
#include <stdexcept>
#include <vector>

#include "support/mask_checks.hpp"
#include "support/messages.hpp"

namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::TileVisibility;
using support::message_of;

/// A packed batch: sequences of these query and key lengths (some empty, some longer than a tile,
/// L_b != S_b both ways), with offsets and the expected pieces.
struct Batch {
  std::vector<Index> query_lengths, key_lengths;

  [[nodiscard]] std::vector<Index> query_offsets() const { return offsets(query_lengths); }
  [[nodiscard]] std::vector<Index> key_offsets() const { return offsets(key_lengths); }
  static std::vector<Index> offsets(const std::vector<Index>& lengths) {
    std::vector<Index> o{0};
    Index total = 0;
    for (const Index n : lengths) o.push_back(total += n);
    return o;
  }
};

const Batch batches[] = {
    {{5, 70, 1, 0, 33, 90},
     {5, 40, 300, 7, 33, 100}},        // mixed lengths, one sequence without queries
    {{1, 1, 1, 1}, {130, 1, 64, 65}},  // decoding: one query per sequence
    {{100, 3, 17}, {100, 0, 17}},      // a sequence without keys: its queries give 0
};

/// Each sequence b on its own, through the reference: rows [qo[b], qo[b+1]) of the packed output
/// must equal attention of those queries over keys [ko[b], ko[b] + valid[b]) with `local`.
template <typename Scalar, typename Mask>
void expect_sequence_by_sequence(const Batch& batch, const Mask& mask, const ref::Mask& local,
                                 const std::vector<Index>& valid, unsigned seed) {
  const std::vector<Index> qo = batch.query_offsets(), ko = batch.key_offsets();
  const Matrix<Scalar> q = support::random_matrix<Scalar>(qo.back(), 12, seed);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(ko.back(), 12, seed + 1);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(ko.back(), 7, seed + 2);
  const auto result = attention::scaled_dot_product_attention_lse(q, k, v, mask);
  for (std::size_t b = 0; b + 1 < qo.size(); ++b) {
    const Index rows = qo[b + 1] - qo[b];
    if (rows == 0) continue;
    SCOPED_TRACE(::testing::Message() << "sequence " << b);
    if (valid[b] == 0) {
      EXPECT_TRUE((result.output.middleRows(qo[b], rows).array() == Scalar(0)).all());
      EXPECT_TRUE(
          (result.lse.segment(qo[b], rows).array() == -std::numeric_limits<Scalar>::infinity())
              .all());
      continue;
    }
    const ref::Matrix expected = ref::attention(ref::to_real(q.middleRows(qo[b], rows)),
                                                ref::to_real(k.middleRows(ko[b], valid[b])),
                                                ref::to_real(v.middleRows(ko[b], valid[b])), local);
    EXPECT_TRUE(support::is_near(result.output.middleRows(qo[b], rows), expected,
                                 support::mask_tolerance<Scalar>()));
  }
}

TYPED_TEST(MaskForward, SequencesMatchEachSequenceAlone) {
  using Scalar = TypeParam;
  unsigned seed = 100;
  for (const Batch& batch : batches) {
    const auto packed = attention::sequences(batch.query_offsets(), batch.key_offsets());
    const std::vector<Index>& all = batch.key_lengths;
    expect_sequence_by_sequence<Scalar>(batch, packed, ref::Mask::none(), all, seed += 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.causal(), ref::Mask::causal_lower_right(),
                                        all, seed += 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.window(6, 0), ref::Mask::window(6, 0), all,
                                        seed += 3);
    // Key padding: the last keys of each sequence are padding; causal aligns to the last real key.
    std::vector<Index> valid;
    for (const Index n : batch.key_lengths) valid.push_back(n - n / 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.key_padding(valid), ref::Mask::none(), valid,
                                        seed += 3);
    expect_sequence_by_sequence<Scalar>(batch, packed.key_padding(valid).causal(),
                                        ref::Mask::causal_lower_right(), valid, seed += 3);
  }
}

TYPED_TEST(MaskForward, SequencesWithSharedOffsetsAndCombination) {
  using Scalar = TypeParam;
  const std::vector<Index> offsets{0, 40, 41, 170, 200};
  const Matrix<Scalar> b = support::random_matrix<Scalar>(200, 200, 110);
  support::expect_forward_matches<Scalar>(attention::sequences(offsets).causal(),
                                          ref::Mask::sequences(offsets, offsets, std::nullopt, 0),
                                          200, 200, 111);
  support::expect_forward_matches<Scalar>(
      attention::sequences(offsets) & attention::bias(b) & attention::causal,
      ref::Mask::both(
          {ref::Mask::sequences(offsets, offsets), ref::Mask::bias(b), ref::Mask::causal()}),
      200, 200, 112);
}

TEST(Sequences, ClassifiesEveryTileExactly) {
  for (const Batch& batch : batches) {
    const auto packed = attention::sequences(batch.query_offsets(), batch.key_offsets());
    std::vector<Index> valid;
    for (const Index n : batch.key_lengths) valid.push_back(n / 2);
    const Index l = batch.query_offsets().back(), s = batch.key_offsets().back();
    for (const Index tile : {1, 4, 16, 64}) {
      support::expect_exact_classification(packed, l, s, tile, tile);
      support::expect_exact_classification(packed.causal(), l, s, tile, tile);
      support::expect_exact_classification(packed.window(3, 2), l, s, tile, tile + 5);
      support::expect_exact_classification(packed.key_padding(valid).causal(), l, s, tile, tile);
    }
  }
  // Off-diagonal tiles are hidden: four sequences of 64 in 64 x 64 tiles give 4 visible
  // (diagonal) and 12 hidden tiles; with causal, the diagonal ones are mixed.
  const std::vector<Index> offsets{0, 64, 128, 192, 256};
  const auto counts =
      support::expect_exact_classification(attention::sequences(offsets), 256, 256, 64, 64);
  EXPECT_EQ(counts[static_cast<std::size_t>(TileVisibility::hidden)], 12);
  EXPECT_EQ(counts[static_cast<std::size_t>(TileVisibility::visible)], 4);
  const auto causal_counts = support::expect_exact_classification(
      attention::sequences(offsets).causal(), 256, 256, 64, 64);
  EXPECT_EQ(causal_counts[static_cast<std::size_t>(TileVisibility::hidden)], 12);
  EXPECT_EQ(causal_counts[static_cast<std::size_t>(TileVisibility::mixed)], 4);
}

TEST(Sequences, Errors) {
  using attention::ShapeError;
  using V = std::vector<Index>;
  EXPECT_EQ(message_of<ShapeError>([] { (void)attention::sequences(V{0}); }),
            "attention::sequences: number of sequences (query_offsets.size() - 1) (= 0) must be "
            "at least 1");
  EXPECT_EQ(message_of<ShapeError>([] {
              (void)attention::sequences(V{0, 2, 4}, V{0, 4});
            }),
            "attention::sequences: key_offsets.size() (= 2) must equal query_offsets.size() (= 3)");
  EXPECT_EQ(message_of<std::invalid_argument>([] {
              (void)attention::sequences(V{1, 4});
            }),
            "attention::sequences: query_offsets[0] (= 1) must be 0");
  EXPECT_EQ(message_of<std::invalid_argument>([] {
              (void)attention::sequences(V{0, 4, 6}, V{0, 5, 3});
            }),
            "attention::sequences: key_offsets[2] (= 3) must be at least key_offsets[1] (= 5): "
            "offsets never decrease");
  EXPECT_THROW((void)attention::sequences(V{0, 4}).window(-1, 0), std::invalid_argument);
  EXPECT_EQ(message_of<ShapeError>([] {
              (void)attention::sequences(V{0, 4, 6}).key_padding({1});
            }),
            "attention::sequences(...).key_padding: valid_keys.size() (= 1) must equal number of "
            "sequences (= 2)");
  EXPECT_EQ(message_of<std::invalid_argument>([] {
              (void)attention::sequences(V{0, 4, 6}).key_padding({1, 3});
            }),
            "attention::sequences(...).key_padding: valid_keys[1] (= 3) must be between 0 and the "
            "sequence's number of keys (= 2)");
  // The offsets must end at L and S: checked by the call.
  const Matrix<double> q = support::random_matrix<double>(6, 4, 1);
  const Matrix<double> k = support::random_matrix<double>(6, 4, 2);
  const Matrix<double> v = support::random_matrix<double>(6, 4, 3);
  EXPECT_EQ(
      message_of<ShapeError>([&] {
        (void)attention::scaled_dot_product_attention(q, k, v, attention::sequences(V{0, 4, 5}));
      }),
      "attention::scaled_dot_product_attention: sequences: last query offset (= 5) must "
      "equal number of queries (= 6)");
  EXPECT_EQ(message_of<ShapeError>([&] {
              (void)attention::scaled_dot_product_attention(
                  q, k, v, attention::sequences(V{0, 4, 6}, V{0, 4, 7}));
            }),
            "attention::scaled_dot_product_attention: sequences: last key offset (= 7) must equal "
            "number of keys (= 6)");
}

TYPED_TEST(MaskGradient, SequencesCausal) {
  const std::vector<Index> qo{0, 2, 5}, ko{0, 4, 6};
  support::expect_gradients_match<TypeParam>(5, 6, 500, attention::sequences(qo, ko).causal());
  support::expect_gradients_match<TypeParam>(5, 6, 510,
                                             attention::sequences(qo, ko).key_padding({3, 1}));
}

TYPED_TEST(MaskTiledBackward, Sequences) {
  const std::vector<Index> qo{0, 70, 71, 71, 200}, ko{0, 30, 150, 160, 230};
  support::expect_tiled_backward_matches<TypeParam>(attention::sequences(qo, ko).causal(),
                                                    ref::Mask::sequences(qo, ko, std::nullopt, 0),
                                                    200, 230, 600);
  support::expect_tiled_backward_matches<TypeParam>(
      attention::sequences(qo, ko).key_padding({20, 100, 5, 70}).window(10, 0),
      ref::Mask::sequences(qo, ko, 10, 0, {20, 100, 5, 70}), 200, 230, 610);
}

// The diagrams at the top of masks/sequences.hpp (and in README.md).
TEST(Sequences, DiagramOfTheReadme) {
  EXPECT_EQ(support::pattern_of<double>(attention::sequences({0, 2, 5}, {0, 3, 5}).causal(), 5, 5),
            "xx...\nxxx..\n.....\n...x.\n...xx\n");
  EXPECT_EQ(support::pattern_of<double>(attention::sequences({0, 2, 5}, {0, 3, 5}), 5, 5),
            "xxx..\nxxx..\n...xx\n...xx\n...xx\n");
}

}  // namespace
