#pragma once
// SPDX-License-Identifier: MIT
//
// y = x W + b for MultiHeadAttention, computed so that every output entry is one fixed chain of
// fused multiply-adds over the inner index, in order:
//   y(i, c) = (...((b(c) + x(i, 0) W(0, c)) + x(i, 1) W(1, c)) + ...) + x(i, n-1) W(n-1, c)
// A row's result then depends only on that row of x: not on where the row sits in the batch, how
// the batch was split into calls, or how many threads ran. Eigen's GEMM, faster on large square
// products, chooses its blocking (and so its rounding) from the sizes and the thread count, which
// would make a layer's output change bitwise with OMP_NUM_THREADS.
//
// Register blocking as in kernels/flash.hpp: mr rows x (2 vectors) of outputs stay in registers
// while the inner index streams through; the tasks (row block, column block) are shared out among
// threads with OpenMP.

#include <algorithm>

#include <Eigen/Core>

#include "attention/kernels/flash.hpp"
#include "attention/types.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

#if defined(__clang__)
#define ATTENTION_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define ATTENTION_UNROLL _Pragma("GCC unroll 16")
#else
#define ATTENTION_UNROLL
#endif

namespace attention::detail::projection {

/// y (MR rows x NP vectors, row stride ldy) = b + x (MR x n, row stride ldx) * w (n x NP vectors,
/// row stride ldw). Nothing needs to be aligned.
template <typename Scalar, int MR, int NP>
inline void micro_kernel(const Scalar* x, Index ldx, const Scalar* w, Index ldw, const Scalar* b,
                         Index n, Scalar* y, Index ldy) {
  using namespace Eigen::internal;
  using P = flash::Packet<Scalar>;
  constexpr Index width = flash::Geometry<Scalar>::width;
  P acc[MR][NP];
  ATTENTION_UNROLL
  for (int x_ = 0; x_ < NP; ++x_) {
    const P bias = ploadu<P>(b + x_ * width);
    ATTENTION_UNROLL
    for (int r = 0; r < MR; ++r) acc[r][x_] = bias;
  }
  for (Index j = 0; j < n; ++j) {
    P wj[NP];
    ATTENTION_UNROLL
    for (int x_ = 0; x_ < NP; ++x_) wj[x_] = ploadu<P>(w + j * ldw + x_ * width);
    ATTENTION_UNROLL
    for (int r = 0; r < MR; ++r) {
      const P xr = pset1<P>(x[r * ldx + j]);
      ATTENTION_UNROLL
      for (int x_ = 0; x_ < NP; ++x_) acc[r][x_] = pmadd(xr, wj[x_], acc[r][x_]);
    }
  }
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    ATTENTION_UNROLL
    for (int x_ = 0; x_ < NP; ++x_) pstoreu(y + r * ldy + x_ * width, acc[r][x_]);
  }
}

/// The MR-row kernels for columns [c0, c1), in blocks of 2 vectors, then 1, then scalars.
template <typename Scalar, int MR>
void row_block(const Scalar* x, Index ldx, const Scalar* w, Index ldw, const Scalar* b, Index n,
               Scalar* y, Index ldy, Index c0, Index c1) {
  constexpr Index width = flash::Geometry<Scalar>::width;
  Index c = c0;
  for (; c + 2 * width <= c1; c += 2 * width) {
    micro_kernel<Scalar, MR, 2>(x, ldx, w + c, ldw, b + c, n, y + c, ldy);
  }
  for (; c + width <= c1; c += width) {
    micro_kernel<Scalar, MR, 1>(x, ldx, w + c, ldw, b + c, n, y + c, ldy);
  }
  for (; c < c1; ++c) {
    for (int r = 0; r < MR; ++r) {
      Scalar acc = b[c];
      for (Index j = 0; j < n; ++j) acc = std::fma(x[r * ldx + j], w[j * ldw + c], acc);
      y[r * ldy + c] = acc;
    }
  }
}

/// y = x w + b (b: one row), written into y; shapes were checked by the caller and y must not
/// alias x, w or b.
template <typename Scalar>
void project(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
             MatrixRef<Scalar> y) {
  using G = flash::Geometry<Scalar>;
  constexpr Index mr = G::mr;
  // Column blocks are wide enough to amortise reading x, narrow enough that a block of w stays in
  // the L2 cache while every row block of x passes it.
  constexpr Index column_block = 8 * G::width;
  const Index rows = x.rows(), n = x.cols(), cols = w.cols();
  const Index row_blocks = (rows + mr - 1) / mr;
  const Index column_blocks = (cols + column_block - 1) / column_block;
  const int threads = flash::thread_count(row_blocks * column_blocks / 4);
#if defined(_OPENMP)
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
#endif
  for (Index task = 0; task < row_blocks * column_blocks; ++task) {
    const Index c0 = (task / row_blocks) * column_block;
    const Index c1 = std::min(cols, c0 + column_block);
    const Index r0 = (task % row_blocks) * mr;
    const Scalar* xr = x.data() + r0 * x.outerStride();
    Scalar* yr = y.data() + r0 * y.outerStride();
    if (r0 + mr <= rows) {
      row_block<Scalar, mr>(xr, x.outerStride(), w.data(), w.outerStride(), b.data(), n, yr,
                            y.outerStride(), c0, c1);
    } else {
      for (Index r = r0; r < rows; ++r, xr += x.outerStride(), yr += y.outerStride()) {
        row_block<Scalar, 1>(xr, x.outerStride(), w.data(), w.outerStride(), b.data(), n, yr,
                             y.outerStride(), c0, c1);
      }
    }
  }
  (void)threads;
}

}  // namespace attention::detail::projection

#undef ATTENTION_UNROLL

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
