#pragma once
// SPDX-License-Identifier: MIT
//
// The register-blocked products every tiled kernel is built from (depends on the instruction set:
// written against Simd<Scalar>, see simd.hpp). An MR x (NP vectors) block of the output lives in
// registers while the inner dimension streams through, one broadcast of the left factor and NP
// fused multiply-adds per row and step (the loop nest of Goto & van de Geijn, 2008):
//
//   qk_micro_kernel    s = q k^T on MR rows x nr keys, keys packed as panels (pack_key_block)
//   pv_micro_kernel    o += p v on MR rows x NP vectors of v's columns, v read in place
//   multiply_by_panel  a whole tile of s = a panel^T from qk micro-kernels
//   accumulate_product a whole tile of o += p v (or p^T v) from pv micro-kernels
//
// The forward (forward.hpp) and the backward (backward_tiles.hpp) run every product through the
// last two; decode (decode.hpp) has its own loops, vectorised along d instead.

#include <algorithm>

#include "attention/kernels/simd.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// Tile geometry. mr rows x (2 vectors) of accumulators must fit the register file with room for
/// the operands: mr = 8 with 32 vector registers (AVX-512), 4 with 16.
template <typename Scalar>
struct Geometry {
  static constexpr Index width = Simd<Scalar>::width;
  static constexpr Index mr = Simd<Scalar>::registers >= 32 ? 8 : 4;
  static constexpr Index nr = 2 * width;          // key columns per micro-tile of q k^T
  static constexpr Index block_rows = 8 * mr;     // queries per tile (Br)
  static constexpr Index block_cols = 4 * width;  // keys per tile (Bc), a multiple of nr
};

/// The register block every product here is made of (and kernels/projection.hpp's too):
///   acc[r][x] += a(r, j) * b(j, x-th vector)   for j = 0, 1, ..., n - 1, in order,
/// where row j of b starts at b + j * ldb (aligned when AlignedB) and a(r, j) is read by the
/// caller's accessor (a tile read plainly or transposed, a packed panel). One broadcast and NP
/// fused multiply-adds per row and step; the MR x NP accumulators stay in registers.
template <typename Scalar, int MR, int NP, bool AlignedB = false, typename LeftAt>
EIGEN_ALWAYS_INLINE void multiply_add_block(typename Simd<Scalar>::Vec (&acc)[MR][NP],
                                            const LeftAt& a, const Scalar* b, Index ldb, Index n) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  for (Index j = 0; j < n; ++j) {
    typename V::Vec bj[NP];
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) {
      bj[x] = AlignedB ? V::load(b + j * ldb + x * w) : V::loadu(b + j * ldb + x * w);
    }
    ATTENTION_UNROLL
    for (int r = 0; r < MR; ++r) {
      const auto ar = V::broadcast(a(r, j));
      ATTENTION_UNROLL
      for (int x = 0; x < NP; ++x) acc[r][x] = V::fma(ar, bj[x], acc[r][x]);
    }
  }
}

/// s (MR x nr, row stride lds) = q (MR x d, row stride ldq) * kp, where kp is a packed panel of
/// d rows of nr (or more, row stride ldk) key entries: kp[kk * ldk + j] = k(j, kk).
template <typename Scalar, int MR>
inline void qk_micro_kernel(const Scalar* q, Index ldq, const Scalar* kp, Index ldk, Index d,
                            Scalar* s, Index lds) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  typename V::Vec c[MR][2];
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) c[r][0] = c[r][1] = V::zero();
  multiply_add_block<Scalar, MR, 2, true>(
      c, [&](int r, Index kk) { return q[r * ldq + kk]; }, kp, ldk, d);
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    V::store(s + r * lds, c[r][0]);
    V::store(s + r * lds + w, c[r][1]);
  }
}

/// o (MR x NP vectors, row stride ldo) += p (MR x n, row stride ldp) * v (n x NP vectors, row
/// stride ldv). v need not be aligned. The tile's products are summed from zero and then added to
/// o, so an output entry is a sum of S / block_cols partial sums of block_cols terms each, rather
/// than one chain of S terms: its rounding error grows with block_cols + S / block_cols, not S.
/// With TransposedP, p is read as the transpose of an n x MR tile (row stride ldp): entry (r, j) is
/// p[j * ldp + r]. The backward uses it for Pᵀ dO and dSᵀ Q without transposing the tile first:
/// a broadcast load costs the same from either address.
template <typename Scalar, int MR, int NP, bool TransposedP = false>
inline void pv_micro_kernel(const Scalar* p, Index ldp, const Scalar* v, Index ldv, Index n,
                            Scalar* o, Index ldo) {
  using V = Simd<Scalar>;
  constexpr Index w = V::width;
  typename V::Vec c[MR][NP];
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) c[r][x] = V::zero();
  }
  multiply_add_block<Scalar, MR, NP>(
      c, [&](int r, Index j) { return TransposedP ? p[j * ldp + r] : p[r * ldp + j]; }, v, ldv, n);
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) {
      V::store(o + r * ldo + x * w, V::add(V::load(o + r * ldo + x * w), c[r][x]));
    }
  }
}

/// s (rows x block_cols, row stride lds) = a (rows x d, row stride lda) * panelᵀ, where the panel
/// holds block_cols keys of width d transposed (pack_key_block): rows a multiple of mr, s aligned.
/// With a = the (scaled) query tile this is s = q_i k_jᵀ (FlashAttention-2, Alg. 1, line 8).
template <typename Scalar>
inline void multiply_by_panel(const Scalar* a, Index lda, Index rows, const Scalar* panel, Index d,
                              Scalar* s, Index lds) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, bc = G::block_cols;
  for (Index r = 0; r < rows; r += mr) {
    for (Index c = 0; c < bc; c += G::nr) {
      qk_micro_kernel<Scalar, mr>(a + r * lda, lda, panel + c, bc, d, s + r * lds + c, lds);
    }
  }
}

/// o (rows x width, row stride ldo) += p (rows x n, row stride ldp) * v (n x width, row stride
/// ldv): rows a multiple of mr, width a multiple of the SIMD width, o aligned; 2-vector micro-tiles
/// and a 1-vector tail. With TransposedP the left factor is pᵀ, p being n x rows (row stride ldp),
/// read in place. With p the tile's weights this is o += p v_j (Alg. 1, line 10).
template <bool TransposedP = false, typename Scalar>
inline void accumulate_product(const Scalar* p, Index ldp, Index rows, const Scalar* v, Index ldv,
                               Index n, Scalar* o, Index ldo, Index width) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, w = G::width;
  for (Index r = 0; r < rows; r += mr) {
    const Scalar* pr = TransposedP ? p + r : p + r * ldp;
    Index c = 0;
    for (; c + 2 * w <= width; c += 2 * w) {
      pv_micro_kernel<Scalar, mr, 2, TransposedP>(pr, ldp, v + c, ldv, n, o + r * ldo + c, ldo);
    }
    if (c < width) {
      pv_micro_kernel<Scalar, mr, 1, TransposedP>(pr, ldp, v + c, ldv, n, o + r * ldo + c, ldo);
    }
  }
}

/// Packs key block kb of k (num_keys x d, row stride ldk) as a d x block_cols panel, transposed
/// and zero-padded past the last key, for qk_micro_kernel.
template <typename Scalar>
void pack_key_block(const Scalar* k, Index ldk, Index num_keys, Index d, Index kb, Scalar* panel) {
  constexpr Index bc = Geometry<Scalar>::block_cols;
  const Index col0 = kb * bc;
  const Index cols = std::min(bc, num_keys - col0);
  for (Index kk = 0; kk < d; ++kk) {
    Scalar* dst = panel + kk * bc;
    for (Index j = 0; j < cols; ++j) dst[j] = k[(col0 + j) * ldk + kk];
    std::fill(dst + cols, dst + bc, Scalar(0));
  }
}

}  // namespace attention::detail::kernels
