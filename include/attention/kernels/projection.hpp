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
//   Measured at x 2048 x 1024 times W 1024 x 1024, float, AVX-512, one thread (a loaded machine,
//   CPU times): 107 GFLOP/s, about 90% of the core's FMA peak, against 98 for the same loops on W
//   in place, 93 for the direct path and 82 for Eigen's GEMM.
// - Direct (at most mc rows: decoding a token, or a few): x and W are read in place, all the rows
//   of a call (up to mr at a time) in one pass over each panel of W. With W hot in the cache (as in
//   a decoding loop) this is faster than packing up to about mc rows (measured: 8 to 48 rows ran
//   at 105 to 110 GFLOP/s direct, 60 to 97 packed). One row runs at 2.7x the time of Eigen's GEMV
//   (0.16 against 0.06 ms for d 1024 x 1024): each panel has only 2 accumulator chains, and each
//   step of the inner index starts a new 4 KiB page of W. TODO(#3): wider panels (np = 8) for
//   rows < 3 would keep the same arithmetic.
//
#include <Eigen/Core>
#include <algorithm>

#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/scratch.hpp"
#include "attention/types.hpp"

namespace attention::detail::projection {

using kernels::Simd;
using kernels::thread_count;
using kernels::thread_index;

/// Block sizes, chosen for a Zen 4 core (32 KiB L1D, 1 MiB L2; AVX-512: 32 vector registers).
template <typename Scalar>
struct Blocking {
  static constexpr Index width = kernels::Geometry<Scalar>::width;
  /// Rows x columns of one micro-tile: mr x 2 vectors of accumulators (16 of the 32 AVX-512
  /// registers, 8 of the 16 otherwise), leaving room for the two W vectors and a broadcast x.
  static constexpr Index mr = kernels::Geometry<Scalar>::mr;
  static constexpr Index np = 2;
  static constexpr Index nr = np * width;
  /// Inner-index block: 4 KiB of a row of x (1024 floats, 512 doubles). Per task, the packed x
  /// block in use (mc x kc: 256 KiB) and the W micro-panel in use (kc x nr: at most 128 KiB, with
  /// AVX-512) then stay in the 1 MiB L2 together, whatever n. The accumulators are stored to y and
  /// reloaded between two blocks, each time for mr rows at y's row stride, so smaller blocks cost
  /// more than they save: measured at n = 1024, kc = 128 (a W micro-panel in L1) ran at 0.85x and
  /// kc = 256 at 0.93x the speed of kc = 1024.
  static constexpr Index kc = 4096 / static_cast<Index>(sizeof(Scalar));
  /// Rows per task, in micro-panels of mr rows.
  static constexpr Index mc = 8 * mr;
  /// Below this many rows the direct path runs (see the file comment): up to one task's rows,
  /// packing W costs more than it saves.
  static constexpr Index min_packed_rows = mc + 1;
};

/// Loads x(r, j) for the micro-kernel: packed micro-panels hold x(r, j) at x[j * MR + r]; in place,
/// x(r, j) is x[r * ldx + j].
template <int MR, bool PackedX, typename Scalar>
inline Scalar x_at(const Scalar* x, Index ldx, int r, Index j) {
  if constexpr (PackedX) {
    return x[j * MR + r];
  } else {
    return x[r * ldx + j];
  }
}

/// The micro-kernel, on MR rows x nr = 2 vectors of y (row stride ldy):
///   acc = b (the same row of nr biases for every row) if b is not null, else the tile of y;
///   acc(r, :) += x(r, j) * w(j, :) for j = 0, 1, ..., kc - 1, in order;
///   y = acc.
/// w: kc rows of nr entries, row stride ldw (nr when packed). Nothing needs to be aligned.
template <typename Scalar, int MR, bool PackedX>
inline void micro_kernel(const Scalar* x, Index ldx, const Scalar* w, Index ldw, Index kc,
                         const Scalar* b, Scalar* y, Index ldy) {
  using V = Simd<Scalar>;
  constexpr Index width = Blocking<Scalar>::width;
  constexpr int np = static_cast<int>(Blocking<Scalar>::np);
  typename V::Vec acc[MR][np];
  if (b != nullptr) {
    ATTENTION_UNROLL
    for (int v = 0; v < np; ++v) {
      const auto bias = V::loadu(b + v * width);
      ATTENTION_UNROLL
      for (int r = 0; r < MR; ++r) acc[r][v] = bias;
    }
  } else {
    ATTENTION_UNROLL
    for (int r = 0; r < MR; ++r) {
      ATTENTION_UNROLL
      for (int v = 0; v < np; ++v) acc[r][v] = V::loadu(y + r * ldy + v * width);
    }
  }
  kernels::multiply_add_block<Scalar, MR, np>(
      acc, [&](int r, Index j) { return x_at<MR, PackedX>(x, ldx, r, j); }, w, ldw, kc);
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    ATTENTION_UNROLL
    for (int v = 0; v < np; ++v) V::storeu(y + r * ldy + v * width, acc[r][v]);
  }
}

/// The micro-kernel on a tile of `rows` <= MR rows and `cols` <= nr columns of y: through a
/// full-size tile on the stack, so that nothing outside the tile is read or written. (The rows and
/// columns of the operands beyond the tile must exist: zero padding in the packed buffers.)
template <typename Scalar, int MR, bool PackedX>
inline void edge_kernel(const Scalar* x, Index ldx, const Scalar* w, Index ldw, Index kc,
                        const Scalar* b, Scalar* y, Index ldy, Index rows, Index cols) {
  constexpr Index nr = Blocking<Scalar>::nr;
  Scalar tile[MR * nr] = {};
  if (b == nullptr) {
    for (Index r = 0; r < rows; ++r) std::copy_n(y + r * ldy, cols, tile + r * nr);
  }
  micro_kernel<Scalar, MR, PackedX>(x, ldx, w, ldw, kc, b, tile, nr);
  for (Index r = 0; r < rows; ++r) std::copy_n(tile + r * nr, cols, y + r * ldy);
}

/// Scratch memory of the packed path, aligned to the packet size.
template <typename Scalar>
using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Copies columns [c0, c0 + nr) of w (n rows, row stride ldw, `cols` columns in all) into the panel
/// p (n x nr, contiguous), with zeros in the columns past `cols`.
template <typename Scalar>
void pack_panel(const Scalar* w, Index ldw, Index n, Index cols, Index c0, Scalar* p) {
  constexpr Index nr = Blocking<Scalar>::nr;
  const Index valid = std::min(nr, cols - c0);
  for (Index j = 0; j < n; ++j) {
    std::copy_n(w + j * ldw + c0, valid, p + j * nr);
    std::fill(p + j * nr + valid, p + (j + 1) * nr, Scalar(0));
  }
}

/// Copies the first `rows` rows of x (n columns, row stride ldx) into micro-panels of mr rows:
/// micro-panel t holds x(t mr + r, j) at xp[t * mr * n + j * mr + r], with zeros in the rows past
/// `rows`.
template <typename Scalar>
void pack_rows(const Scalar* x, Index ldx, Index n, Index rows, Scalar* xp) {
  constexpr Index mr = Blocking<Scalar>::mr;
  for (Index t = 0; t * mr < rows; ++t) {
    Scalar* panel = xp + t * mr * n;
    const Scalar* rows_t = x + t * mr * ldx;
    const Index valid = std::min(mr, rows - t * mr);
    if (valid == mr) {
      // mr input streams at once, one output stream: measured 3x as fast as one row at a time.
      for (Index j = 0; j < n; ++j) {
        ATTENTION_UNROLL
        for (Index r = 0; r < mr; ++r) panel[j * mr + r] = rows_t[r * ldx + j];
      }
    } else {
      for (Index j = 0; j < n; ++j) {
        for (Index r = 0; r < mr; ++r) {
          panel[j * mr + r] = r < valid ? rows_t[r * ldx + j] : Scalar(0);
        }
      }
    }
  }
}

/// The packed path (see the file comment): y = x w + b. Shapes were checked by the caller; y must
/// not alias x, w or b. Any row count is accepted (project() sends only the larger ones here).
template <typename Scalar>
void project_packed(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
                    MatrixRef<Scalar> y) {
  using B = Blocking<Scalar>;
  constexpr Index mr = B::mr, nr = B::nr, kc = B::kc, mc = B::mc;
  const Index rows = x.rows(), n = x.cols(), cols = w.cols();
  const Index ldx = x.outerStride(), ldy = y.outerStride();
  const Index panels = (cols + nr - 1) / nr;
  const Index row_tasks = (rows + mc - 1) / mc;
  // Threads only for work worth waking them: about 2^20 multiply-adds each (some 20 us) at least.
  const Index work = rows * n * cols;
  const int max_threads = thread_count(std::min(row_tasks * panels, work >> 20));
  // With several threads and few row blocks, the panels are split into groups too, so that every
  // thread has work (each group packs its rows of x again: a copy of mc x n per group, small next
  // to the group's mc x n x (group width) multiply-adds).
  const Index wanted_tasks = 4 * Index{max_threads};
  const Index panel_groups =
      max_threads > 1 ? std::clamp<Index>((wanted_tasks + row_tasks - 1) / row_tasks, 1, panels)
                      : 1;
  const Index tasks = row_tasks * panel_groups;
  const int threads = std::min(max_threads, thread_count(tasks));

  // W packed once: panel p holds columns [p nr, p nr + nr) as n x nr, zero-padded past cols, in
  // the calling thread's scratch (scratch.hpp: 4 MiB at 1024 x 1024, kept for the next call rather
  // than faulted in again). The bias is padded the same way.
  Scalar* const w_packed =
      thread_scratch<Scalar>().get(ScratchSlot::packed_weights, panels * n * nr);
  Buffer<Scalar> b_padded = Buffer<Scalar>::Zero(panels * nr);
  std::copy_n(b.data(), cols, b_padded.data());
  Buffer<Scalar> x_packed(static_cast<Index>(threads) * mc * std::max<Index>(n, 1));
  kernels::run_parallel(threads, [&] {
    kernels::share_static(panels, [&](Index p) {
      pack_panel(w.data(), w.outerStride(), n, cols, p * nr, w_packed + p * n * nr);
    });
  });

  kernels::run_parallel(threads, [&] {
    kernels::share_static(tasks, [&](Index task) {
      const Index r0 = (task / panel_groups) * mc;
      const Index group = task % panel_groups;
      const Index p0 = group * panels / panel_groups, p1 = (group + 1) * panels / panel_groups;
      const Index task_rows = std::min(mc, rows - r0);
      const Index micro_panels = (task_rows + mr - 1) / mr;
      Scalar* xp =
          x_packed.data() + static_cast<Index>(thread_index()) * mc * std::max<Index>(n, 1);
      pack_rows(x.data() + r0 * ldx, ldx, n, task_rows, xp);
      // The inner index in blocks of kc; a zero-width block when n = 0, so that y = b.
      for (Index k0 = 0; k0 < n || k0 == 0; k0 += kc) {
        const Index k_len = std::min(kc, n - k0);
        for (Index p = p0; p < p1; ++p) {
          const Index c0 = p * nr, tile_cols = std::min(nr, cols - c0);
          const Scalar* wp = w_packed + p * n * nr + k0 * nr;
          const Scalar* bias = k0 == 0 ? b_padded.data() + c0 : nullptr;
          for (Index t = 0; t < micro_panels; ++t) {
            const Scalar* xt = xp + t * mr * n + k0 * mr;
            Scalar* yt = y.data() + (r0 + t * mr) * ldy + c0;
            const Index tile_rows = std::min(mr, task_rows - t * mr);
            if (tile_rows == mr && tile_cols == nr) {
              micro_kernel<Scalar, mr, true>(xt, 0, wp, nr, k_len, bias, yt, ldy);
            } else {
              edge_kernel<Scalar, mr, true>(xt, 0, wp, nr, k_len, bias, yt, ldy, tile_rows,
                                            tile_cols);
            }
          }
        }
      }
    });
  });
}

/// The direct path on rows [0, rows), rows <= MR, in one micro-kernel call per panel (MR is
/// brought down to `rows` at compile time).
template <typename Scalar, int MR>
void direct_rows(const Scalar* x, Index ldx, const Scalar* w, Index ldw, Index n, const Scalar* b,
                 Scalar* y, Index ldy, Index rows, Index cols) {
  if constexpr (MR > 1) {
    if (rows < MR) {
      direct_rows<Scalar, MR - 1>(x, ldx, w, ldw, n, b, y, ldy, rows, cols);
      return;
    }
  }
  if (cols == Blocking<Scalar>::nr) {
    micro_kernel<Scalar, MR, false>(x, ldx, w, ldw, n, b, y, ldy);
  } else {
    edge_kernel<Scalar, MR, false>(x, ldx, w, ldw, n, b, y, ldy, rows, cols);
  }
}

/// The direct path (see the file comment): y = x w + b with x and W read in place, except the last
/// panel when cols is not a multiple of nr, which is copied zero-padded. Same contract as
/// project_packed; meant for at most mc rows (W is read once per mr rows).
template <typename Scalar>
void project_direct(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
                    MatrixRef<Scalar> y) {
  using B = Blocking<Scalar>;
  constexpr Index mr = B::mr, nr = B::nr;
  const Index rows = x.rows(), n = x.cols(), cols = w.cols();
  const Index ldx = x.outerStride(), ldw = w.outerStride(), ldy = y.outerStride();
  const Index full_panels = cols / nr, panels = (cols + nr - 1) / nr;
  Buffer<Scalar> tail_w, tail_b;
  if (panels > full_panels) {
    tail_w.resize(n * nr);
    pack_panel(w.data(), ldw, n, cols, full_panels * nr, tail_w.data());
    tail_b = Buffer<Scalar>::Zero(nr);
    std::copy_n(b.data() + full_panels * nr, cols - full_panels * nr, tail_b.data());
  }
  // One thread per 32 Ki entries of W at least (128 KiB of floats): decoding one token is bound by
  // reading W, which two cores do faster than one.
  const int threads = thread_count(panels * n * nr / Index{32768});
  kernels::run_parallel(threads, [&] {
    kernels::share_static(panels, [&](Index p) {
      const Index c0 = p * nr;
      const bool tail = p == full_panels;
      const Scalar* wp = tail ? tail_w.data() : w.data() + c0;
      const Scalar* bp = tail ? tail_b.data() : b.data() + c0;
      const Index tile_cols = std::min(nr, cols - c0);
      for (Index r0 = 0; r0 < rows; r0 += mr) {
        direct_rows<Scalar, mr>(x.data() + r0 * ldx, ldx, wp, tail ? nr : ldw, n, bp,
                                y.data() + r0 * ldy + c0, ldy, std::min(mr, rows - r0), tile_cols);
      }
    });
  });
}

/// y = x w + b (b: one row), written into y; shapes were checked by the caller and y must not
/// alias x, w or b. Both paths give the same bits (see the file comment).
template <typename Scalar>
void project(ConstMatrixRef<Scalar> x, ConstMatrixRef<Scalar> w, const RowVector<Scalar>& b,
             MatrixRef<Scalar> y) {
  if (x.rows() >= Blocking<Scalar>::min_packed_rows) {
    project_packed<Scalar>(x, w, b, y);
  } else {
    project_direct<Scalar>(x, w, b, y);
  }
}

}  // namespace attention::detail::projection
