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

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "attention/detail/cpu_features.hpp"
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

/// Integer scores over int8 keys (decode_scores_int16, decode_kernels.inc). Where a head lies in
/// one group of an Int8KVCache (one scale s_kj per key and head), each query row q' (times the
/// score pipeline's query factor) is rounded to 16-bit integers with one scale per row,
///   s_q = max_t |q'_t| / 32767,   q_int_t = round(q'_t / s_q)   (|q_int_t| <= 32767),
/// the keys' int8 entries are widened to 16 bits, and the products are summed exactly in 32-bit
/// integers (vpdpwssd with AVX512_VNNI, vpmaddwd + vpaddd on AVX-512 and AVX2, plain integer
/// arithmetic elsewhere); the score is then float(sum) (s_q s_kj), one rounding of the sum and
/// two of the scales. The integer sums are exact, so every path gives the same bits.
/// Overflow: |q_int_t k_int_t| <= 32767 x 127, so a sum of up to 516 products fits in an int32
/// (2^31 - 1 = 2,147,483,647 >= 32767 x 127 x 516); the columns are summed in blocks of
/// int16_dot_block = 512, each block's sum converted to float and the blocks added in order.
/// Error: with q' = s_q q_int + e, |e_t| <= s_q (1/2 + 2^-9) = max|q'| (1/2 + 2^-9) / 32767
/// (rounding to nearest; the division q'_t / s_q is itself rounded, by at most 32767 u s_q, and
/// never passes 32767.5, so the clamp to +-32767 never moves an entry for a normal s_q). The score
/// then differs from q' . k~ (k~ = s_kj k_int, the stored key) by |e . k~| <= max|e| sum_t |k~_t|,
/// about max|q'| / 65534 per entry against the int8 key's own error |k - k~| <= s_kj / 2 =
/// max|k| / 254: 258x smaller per entry (65534 / 254), negligible against the cache's rounding.
/// The sum's conversion and the two scale products add 3 float roundings (u = 2^-24) relative to
/// |q'| . |k~|, where float scores add d.
inline constexpr Index int16_dot_block = 512;
inline constexpr float int16_query_max = 32767.0f;
/// Query rows of int16 entries are padded to a multiple of this many entries (64 bytes).
inline constexpr Index int16_query_pad = 32;

/// Rounds q[0 .. d) to 16-bit integers at out (s_q above; zeros from d to d_padded) and returns
/// s_q (0 for a zero row). q must be finite (the caller checks: a non-finite row takes the float
/// scores, whose NaN and infinity rules then hold).
inline float round_query_int16(const float* q, Index d, std::int16_t* out, Index d_padded) {
  float max_abs = 0;
  for (Index t = 0; t < d; ++t) max_abs = std::max(max_abs, std::abs(q[t]));
  const float scale = max_abs / int16_query_max;
  for (Index t = 0; t < d_padded; ++t) {
    float x = 0;
    // A subnormal scale can leave q / scale slightly beyond 32767: the clamp keeps it an int16.
    if (t < d && scale > 0) {
      x = std::min(int16_query_max, std::max(-int16_query_max, std::nearbyint(q[t] / scale)));
    }
    out[t] = static_cast<std::int16_t>(x);
  }
  return scale;
}

/// True if this CPU runs AVX512_VNNI (CPUID leaf 7, ECX bit 11) beside the avx512 path's set: the
/// avx512 path's integer scores then take vpdpwssd (one instruction where vpmaddwd + vpaddd take
/// two; the same sums). Detected once.
[[nodiscard]] inline bool avx512_vnni_available() {
  static const bool available = [] {
#if ATTENTION_DETAIL_HAS_CPUID
    if (!detail::cpu_features().avx512bw || __get_cpuid_max(0, nullptr) < 7) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    return ((ecx >> 11) & 1u) != 0;
#else
    return false;
#endif
  }();
  return available;
}

/// Keys at most in one call of decode_values (decode_kernels.inc) over int8 rows with one scale
/// per row, whose weights times those scales it keeps on the stack: a step of decode.hpp.
inline constexpr Index decode_values_max_keys = 16;

}  // namespace attention::detail::kernels

#define ATTENTION_KERNEL_BODY "attention/kernels/decode_kernels.inc"
#include "attention/kernels/for_each_isa.inc"
