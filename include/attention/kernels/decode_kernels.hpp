#pragma once
// SPDX-License-Identifier: MIT
//
// The products of the split-key decode path (decode.hpp), which depend on the instruction set
// (written against Simd<Scalar>, simd.hpp). Unlike the tiles' micro-kernels (micro_kernels.hpp)
// they read K and V in place, row by row in address order, and ask for the next rows ahead of use:
//   decode_scores   s = q k^T, each score a dot product vectorised along d
//   decode_values   o += p v, 4 query rows x up to 4 vectors of v's columns at a time
// K and V may be stored in a narrower type than the float they are computed in (a KVCache of
// Eigen::bfloat16 or Eigen::half, an Int8KVCache): the kernels then read the stored rows and widen
// them in registers (Simd::load_widened: F16C's conversion for half, a 16-bit shift for bfloat16,
// sign extension for int8, times the group's scale for int8), so a step reads 2 or about 1 byte
// per entry instead of 4. The products are then those of the float kernel on the widened values.

#include <cstdint>
#include <type_traits>

#include "attention/kernels/simd.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// The scales of int8 rows (Int8KVCache): entry (j, t) of a head's rows is q(j, t) * first[j *
/// stride + (column + t) / group], `column` being the head's first column in the cache's row.
/// Empty (first == nullptr) for rows of any other type.
struct GroupScales {
  const float* first = nullptr;
  Index stride = 0, group = 0, column = 0;

  /// The scales from row j on.
  [[nodiscard]] GroupScales from_row(Index j) const {
    return first == nullptr ? *this : GroupScales{first + j * stride, stride, group, column};
  }
  /// The scales of the columns from `c` on (c columns right of this one's first).
  [[nodiscard]] GroupScales from_column(Index c) const {
    return {first, stride, group, column + c};
  }
  /// The scale of entry (j, t).
  [[nodiscard]] float of(Index j, Index t) const {
    return first[j * stride + (column + t) / group];
  }
};

/// True for the types the decode kernels widen in registers: the stored types of the
/// low-precision caches.
template <typename Element>
inline constexpr bool is_widened_v =
    std::is_same_v<Element, Eigen::bfloat16> || std::is_same_v<Element, Eigen::half> ||
    std::is_same_v<Element, std::int8_t>;

/// Rows of K or V as the decode path reads them: row j starts at data + j * ld; Element is the
/// compute type itself or a widened type (is_widened_v), with the scales of int8 rows.
template <typename Element>
struct StoredRows {
  const Element* data = nullptr;
  Index ld = 0;
  GroupScales scales = {};

  /// Row j on, and the head whose first column is `column` (its scales too, for int8).
  [[nodiscard]] StoredRows at(Index j, Index column = 0) const {
    return {data + j * ld + column, ld, scales.from_row(j).from_column(column)};
  }
};

/// One K/V head's keys and values as the decode path reads them.
template <typename Element>
struct StoredKV {
  StoredRows<Element> k, v;
};

/// True if the decode kernels read int8 rows of heads of head_dim columns in groups of `group`
/// in place: every vector of every path's width (up to 16 floats) then lies in one group.
inline bool int8_rows_in_place(Index head_dim, Index group) {
  return group % 16 == 0 && head_dim % group == 0;
}

}  // namespace attention::detail::kernels

#define ATTENTION_KERNEL_BODY "attention/kernels/decode_kernels.inc"
#include "attention/kernels/for_each_isa.inc"
