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
// sign extension for int8), so a step reads 2 or about 1 byte per entry instead of 4. The products
// are then those of the float kernel on the widened values; int8 rows are scaled one of two ways:
//   - a head within one group (group_size a multiple of head_dim, typically equal): one scale s_j
//     per key, so s_j = s_kj (q . k_int_j) and o += (p_j s_vj) v_int_j: one multiply per dot
//     product and per weight instead of one per widened vector, which keeps the int8 step, whose
//     every byte costs a conversion and 4 FMAs (32 query heads on 8 K/V heads), near the speed at
//     which memory delivers it; the rounding differs from that of the float kernel on q s (within
//     the same bound);
//   - smaller groups: each widened vector times its group's scale, which gives the float kernel's
//     bits on the dequantised rows.
// A dot product keeps 4 query rows of several keys in flight at once, each key's sum in the same
// order as alone, so the blocking changes no bit:
//   - AVX2: 2 keys (8 accumulators: an FMA's latency times the 2 FMAs a cycle), each summed across
//     its lanes by Simd::sum;
//   - AVX-512 (16 floats a vector, 32 registers): 4 keys (16 accumulators, 4 widened key vectors
//     and a query vector: 21 registers), and the 16 accumulators summed across lanes together by
//     a transposing tree (Simd::sum_each, simd_avx512.hpp: 30 shuffles and 15 additions for
//     16 sums, where 16 separate sums take 16 x 9 extractions, shuffles and additions, more
//     instructions than the block's 128 FMAs at d = 128); a block of fewer keys takes the same
//     tree.

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
  /// True if the d columns from this one's first lie in one group: one scale per row then
  /// (group_size a multiple of head_dim, the heads starting at multiples of head_dim).
  [[nodiscard]] bool one_per_row(Index d) const {
    return first != nullptr && column % group + d <= group;
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
/// in place: a head lies in one group (group a multiple of head_dim: one scale per key and head,
/// applied to the finished dot product and folded into the softmax weight), or every vector of
/// every path's width (up to 16 floats) lies in one group (a multiple of 16 that divides
/// head_dim: each vector scaled as it is widened).
inline bool int8_rows_in_place(Index head_dim, Index group) {
  return group % head_dim == 0 || (group % 16 == 0 && head_dim % group == 0);
}

/// Keys at most in one call of decode_values (decode_kernels.inc) over int8 rows with one scale
/// per row, whose weights times those scales it keeps on the stack: a step of decode.hpp.
inline constexpr Index decode_values_max_keys = 16;

}  // namespace attention::detail::kernels

#define ATTENTION_KERNEL_BODY "attention/kernels/decode_kernels.inc"
#include "attention/kernels/for_each_isa.inc"
