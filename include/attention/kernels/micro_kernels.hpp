#pragma once
// SPDX-License-Identifier: MIT
//
// The register-blocked products every tiled kernel is built from (depends on the instruction set:
// written against Simd<Scalar>, see simd.hpp). An MR x (NP vectors) block of the output lives in
// registers while the inner dimension streams through, one broadcast of the left factor and NP
// fused multiply-adds per row and step (the loop nest of Goto & van de Geijn, 2008):
//
//   qk_micro_kernel    s = q k^T on MR rows x NP vectors of keys, keys packed as panels
//                      (pack_key_block)
//   pv_micro_kernel    o += p v on MR rows x NP vectors of v's columns, v read in place
//   multiply_by_panel  a whole tile of s = a panel^T from qk micro-kernels
//   accumulate_product a whole tile of o += p v (or p^T v) from pv micro-kernels
//
// The forward (forward.hpp) and the backward (backward_tiles.hpp) run every product through the
// last two; decode (decode.hpp) has its own loops, vectorised along d instead.

#include <algorithm>
#include <type_traits>

#include "attention/kernels/dispatch.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/types.hpp"

namespace attention::detail::kernels {

/// The L1 data cache the tile sizes are derived for (micro_kernels.inc): Zen 5's 48 KiB.
inline constexpr Index l1_data_bytes = Index{48} * 1024;

/// Bytes of one head's packed K and V panels above which the float forward on the 32-register
/// path asks each key block's panels into L2 ahead of use (Geometry::prefetches_panels).
inline constexpr double prefetch_panels_above = double(Index{4} << 20);

/// A path's Geometry as values, for code outside the paths (tests that size buffers).
struct TileSizes {
  Index width, mr, block_rows, block_cols;
};

}  // namespace attention::detail::kernels

#define ATTENTION_KERNEL_BODY "attention/kernels/micro_kernels.inc"
#include "attention/kernels/for_each_isa.inc"

namespace attention::detail::kernels {

/// The Geometry of the path active_path() runs (dispatch.hpp): kernels::Geometry is the baseline
/// path's, which the avx2 and avx512 paths do not share.
template <typename Scalar>
TileSizes active_tile_sizes() {
  ATTENTION_DISPATCH(Scalar, tile_sizes, Scalar());
}

}  // namespace attention::detail::kernels
