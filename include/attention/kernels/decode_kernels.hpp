#pragma once
// SPDX-License-Identifier: MIT
//
// The products of the split-key decode path (decode.hpp), which depend on the instruction set
// (written against Simd<Scalar>, simd.hpp). Unlike the tiles' micro-kernels (micro_kernels.hpp)
// they read K and V in place, row by row in address order, and ask for the next rows ahead of use:
//   decode_scores   s = q k^T, each score a dot product vectorised along d
//   decode_values   o += p v, 4 query rows x up to 4 vectors of v's columns at a time

#include "attention/kernels/simd.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Rows that a decode kernel asks for while it computes: row j < count starts at first + j * stride
/// and is `width` scalars wide.
template <typename Scalar>
struct RowsAhead {
  const Scalar* first = nullptr;
  Index stride = 0, width = 0, count = 0;
};

/// s[r * lds + j] = q_r . k_j for r < rows_padded (a multiple of 4; q rows d_padded apart, zero
/// past d) and keys j < cols (row stride ldk), each a dot product vectorised along d. Asks for
/// row j of `ahead` alongside key j.
template <typename Scalar>
inline void decode_scores(const Scalar* q, Index rows_padded, Index d_padded, Index d,
                          const Scalar* k, Index ldk, Index cols, Scalar* s, Index lds,
                          const RowsAhead<Scalar>& ahead) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  const Index d_full = d / w * w;
  for (Index j = 0; j < cols; ++j) {
    const Scalar* kj = k + j * ldk;
    if (j < ahead.count) prefetch_l2(ahead.first + j * ahead.stride, ahead.width);
    for (Index r = 0; r < rows_padded; r += 4) {
      const Scalar* q0 = q + r * d_padded;
      auto a0 = V::zero(), a1 = a0, a2 = a0, a3 = a0;
      for (Index t = 0; t < d_full; t += w) {
        const auto kp = V::loadu(kj + t);
        a0 = V::fma(V::load(q0 + t), kp, a0);
        a1 = V::fma(V::load(q0 + d_padded + t), kp, a1);
        a2 = V::fma(V::load(q0 + 2 * d_padded + t), kp, a2);
        a3 = V::fma(V::load(q0 + 3 * d_padded + t), kp, a3);
      }
      Scalar s0 = V::sum(a0), s1 = V::sum(a1), s2 = V::sum(a2), s3 = V::sum(a3);
      for (Index t = d_full; t < d; ++t) {
        s0 += q0[t] * kj[t];
        s1 += q0[d_padded + t] * kj[t];
        s2 += q0[2 * d_padded + t] * kj[t];
        s3 += q0[3 * d_padded + t] * kj[t];
      }
      s[r * lds + j] = s0;
      s[(r + 1) * lds + j] = s1;
      s[(r + 2) * lds + j] = s2;
      s[(r + 3) * lds + j] = s3;
    }
  }
}

/// o (4 rows x NP vectors, row stride ldo, aligned) += p (4 x n, row stride ldp) v (n x NP vectors,
/// row stride ldv), summed from zero over the n keys and then added. Asks for the same columns of
/// row j of `ahead` alongside key j.
template <typename Scalar, int NP>
inline void decode_values_block(const Scalar* p, Index ldp, const Scalar* v, Index ldv, Index n,
                                Scalar* o, Index ldo, const RowsAhead<Scalar>& ahead) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  typename V::Vec c[4][NP];
  ATTENTION_UNROLL
  for (int r = 0; r < 4; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) c[r][x] = V::zero();
  }
  for (Index j = 0; j < n; ++j) {
    if (j < ahead.count) prefetch_l2(ahead.first + j * ahead.stride, ahead.width);
    typename V::Vec b[NP];
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) b[x] = V::loadu(v + j * ldv + x * w);
    ATTENTION_UNROLL
    for (int r = 0; r < 4; ++r) {
      const auto a = V::broadcast(p[r * ldp + j]);
      ATTENTION_UNROLL
      for (int x = 0; x < NP; ++x) c[r][x] = V::fma(a, b[x], c[r][x]);
    }
  }
  ATTENTION_UNROLL
  for (int r = 0; r < 4; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) {
      V::store(o + r * ldo + x * w, V::add(V::load(o + r * ldo + x * w), c[r][x]));
    }
  }
}

/// o (rows_padded x d_v, row stride ldo) += p (rows_padded x n, row stride ldp) v (n x d_v, row
/// stride ldv). Asks for row j of `ahead` (d_v wide) alongside key j, on the first 4 rows.
template <typename Scalar>
inline void decode_values(const Scalar* p, Index ldp, Index rows_padded, const Scalar* v, Index ldv,
                          Index n, Index d_v, Scalar* o, Index ldo,
                          const RowsAhead<Scalar>& ahead) {
  constexpr Index w = Simd<Scalar>::width;
  const Index d_v_full = d_v / w * w;
  for (Index r = 0; r < rows_padded; r += 4) {
    RowsAhead<Scalar> columns_ahead = r == 0 ? ahead : RowsAhead<Scalar>{};
    const Scalar* pr = p + r * ldp;
    Scalar* or_ = o + r * ldo;
    Index x = 0;
    for (; x + 4 * w <= d_v_full; x += 4 * w) {
      columns_ahead.width = 4 * w;
      decode_values_block<Scalar, 4>(pr, ldp, v + x, ldv, n, or_ + x, ldo, columns_ahead);
      if (columns_ahead.first != nullptr) columns_ahead.first += 4 * w;
    }
    for (; x + w <= d_v_full; x += w) {
      columns_ahead.width = w;
      decode_values_block<Scalar, 1>(pr, ldp, v + x, ldv, n, or_ + x, ldo, columns_ahead);
      if (columns_ahead.first != nullptr) columns_ahead.first += w;
    }
    for (Index rr = r; rr < r + 4; ++rr) {
      for (Index xx = d_v_full; xx < d_v; ++xx) {
        Scalar sum(0);
        for (Index j = 0; j < n; ++j) sum += p[rr * ldp + j] * v[j * ldv + xx];
        o[rr * ldo + xx] += sum;
      }
    }
    if (r == 0 && d_v_full < d_v && ahead.first != nullptr) {
      for (Index j = 0; j < ahead.count; ++j) {
        prefetch_l2(ahead.first + j * ahead.stride + d_v_full, d_v - d_v_full);
      }
    }
  }
}

}  // namespace attention::detail::kernels
