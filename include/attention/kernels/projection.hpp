#pragma once
// SPDX-License-Identifier: MIT
//
// y = x W + b for MultiHeadAttention, computed so that every output entry is one fixed chain of
// fused multiply-adds over the inner index, in order:
//   y(i, c) = (...((b(c) + x(i, 0) W(0, c)) + x(i, 1) W(1, c)) + ...) + x(i, n-1) W(n-1, c)
// A row's result then depends only on that row of x: not on where the row sits in the batch, how
// the batch was split into calls, which path below ran, or how many threads ran. Eigen's GEMM,
// faster on large square products, chooses its blocking (and so its rounding) from the sizes and
// the thread count, which would make a layer's output change bitwise with OMP_NUM_THREADS.
//
// Every entry is computed by the same vector operation, Simd::fma (kernels/simd.hpp), in some lane
// of a micro-kernel (one fused instruction where the target has FMA; a multiply and an add
// otherwise): the columns past the last whole panel are computed in a zero-padded panel rather
// than by scalar code, so the arithmetic of a column never depends on the path.
//
// Register blocking as in kernels/micro_kernels.hpp: mr rows x nr = 2 vectors of outputs stay in
// registers while the inner index streams through. Two paths, with the same arithmetic:
//
// - Packed (more than mc rows), the loop nest of Goto & van de Geijn (2008, "Anatomy of
//   high-performance matrix multiplication", ACM TOMS 34(3)): W is packed once per call into
//   panels of nr columns (n x nr, contiguous), shared by all threads; each task packs its block of
//   mc rows of x into micro-panels of mr rows (n x mr, inner index outermost), then runs every
//   micro-panel of x against every panel of W it owns. W read in place has a row stride of d_out
//   scalars (4 KiB for d_out = 1024 floats), so the rows a micro-kernel streams through fall into
//   the same few cache sets; packed, both operands are read contiguously. The inner index is cut
//   into blocks of kc only when n is large (see Blocking::kc): between two blocks the accumulators
//   are stored to y and loaded back, which is exact, as the chain above continues where it stopped.
// - Direct (at most mc rows: decoding a token, or a few): x and W are read in place, all the rows
//   of a call (up to mr at a time) in one pass over W. Decoding is bound by reading W (a layer's
//   weights are long gone from the caches when its next token comes), so the loop order is chosen
//   for how W streams from memory: the inner index in steps of a few rows of W (the micro-tiles'
//   chains stored to y between steps, exactly as between the packed path's kc blocks), each step
//   walking those rows along a thread's whole run of columns. The prefetchers then see a few
//   sequential streams and every page is read whole; walking one panel of nr columns down all n
//   rows instead, as this path once did, started a new 4 KiB page at every step and read W at a
//   fifth of the memory bandwidth. Blocking::direct_kc_few has the derivation.
//
#include <Eigen/Core>
#include <algorithm>

#include "attention/kernels/dispatch.hpp"
#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/scratch.hpp"
#include "attention/types.hpp"

#define ATTENTION_KERNEL_BODY "attention/kernels/projection.inc"
#include "attention/kernels/for_each_isa.inc"

namespace attention::detail::projection {

/// The baseline path's block sizes (each path has its own: kernels::<path>::projection::Blocking).
using kernels::baseline::projection::Blocking;

/// y = x w + b (b: one row), written into y; shapes were checked by the caller and y must not
/// alias x, w or b. Both paths give the same bits (see the file comment), on the instruction set of
/// kernels::active_path() (kernels/dispatch.hpp).
template <typename Scalar>
void project(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
             MatrixRef<Scalar> y) {
  ATTENTION_DISPATCH(Scalar, projection::project, x, w, b, y);
}

/// The packed path alone (project() takes it for more than Blocking::mc rows), for the tests.
template <typename Scalar>
void project_packed(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
                    MatrixRef<Scalar> y) {
  ATTENTION_DISPATCH(Scalar, projection::project_packed, x, w, b, y);
}

/// The direct path alone (project() takes it for at most Blocking::mc rows), for the tests.
template <typename Scalar>
void project_direct(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
                    MatrixRef<Scalar> y) {
  ATTENTION_DISPATCH(Scalar, projection::project_direct, x, w, b, y);
}

}  // namespace attention::detail::projection
