#pragma once
// SPDX-License-Identifier: MIT
//
// What the two tiled forwards share, the float kernel (forward.hpp) and the bfloat16 one on
// AVX512_BF16 (bf16_forward.hpp): the walk of one query tile over the key tiles with the online
// softmax (FlashAttention-2, Dao 2023, Alg. 1, lines 6-13), and the scan of the values that
// decides how p v runs. Each kernel brings its own operands and products:
//
//   walk_key_tiles     per key tile the mask does not hide:
//                        scores(kb, cols, s)        s = q' k_tile^T                 (line 8)
//                        the score rules and the online softmax step, in Scalar     (lines 9-10)
//                        accumulate(kb, cols, s, o) o += p v_tile                   (line 10)
//                      then out = o / l, lse = m + log(l)                           (lines 12-13)
//   value_range        max |v| over the finite values, and whether all are finite
//
// The scheduling of a call's packing and tiles among threads is ForwardJobs (scheduling.hpp).
// The body (forward_tiles.inc) depends on the instruction set and is compiled once per path
// (for_each_isa.inc).

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <type_traits>

#include "attention/detail/row_math.hpp"
#include "attention/kernels/online_softmax.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Everything the tiles of one head share: its operands after packing, and the sizes. q and out
/// are of QElement (Scalar, or Eigen::half or Eigen::bfloat16 for a float Scalar); the packed
/// panels of Panel (Scalar, or the bfloat16 kernel's pairs), laid out by the kernel's packing.
template <typename Scalar, typename QElement = Scalar, typename Panel = Scalar>
struct Problem {
  const QElement* q;
  Index ldq;
  Index num_queries, num_keys, d_k, d_v;
  // num_key_blocks panels of keys and of values, block_cols keys each; the value panels' rows
  // are d_v rounded up to whole column chunks, d_v_padded.
  const Panel* k_packed;
  const Panel* v_packed;
  Index d_v_padded;
  Index block_cols;  // keys per key block
  ScoreRules<Scalar> rules;
  QElement* out;
  Index ldo;
  Scalar* lse;                      // may be null
  bool values_finite;               // false: some value is NaN or inf, p v skips zero weights
  Scalar output_scale = Scalar(1);  // a power of two undoing the packed values' rescale, else 1
};

/// The largest finite |v| of a call's values, and whether every value is finite (value_range).
template <typename Scalar>
struct ValueRange {
  Scalar max_finite = Scalar(0);
  bool finite = true;
};

}  // namespace attention::detail::kernels

#define ATTENTION_KERNEL_BODY "attention/kernels/forward_tiles.inc"
#include "attention/kernels/for_each_isa.inc"
