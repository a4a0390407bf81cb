#pragma once
// SPDX-License-Identifier: MIT
//
// Tiled backward of scaled dot-product attention (FlashAttention-2 backward, Dao 2023, Alg. 2) on
// the CPU. It never holds the L x S weights: from q, k and the forward's saved log-sum-exp it
// recomputes one block_rows x block_cols tile of weights at a time and turns it into gradients:
//
//   s  = scale * q_i k_j^T (+ mask)                                     (Alg. 2, line 11)
//        (soft-capped: s = c tanh(scale * q_i k_j^T / c) (+ mask), c = softcap)
//   p  = exp(s - lse_i)                       exactly the forward's weights (line 13)
//   dv_j += pᵀ do_i                                                      (line 16)
//   dp = do_i v_jᵀ                                                       (line 17)
//   ds = p ∘ (dp − delta_i),   delta_i = rowsum(do_i ∘ o_i) = rowsum(dp ∘ p)  (lines 4, 19)
//   dq_i += scale · ds k_j,   dk_j += scale · dsᵀ q_i                  (lines 20-21)
//        (soft-capped: ds ∘ (1 − tanh²) in place of ds there; dbias stays ds)
//
// delta uses the identity rowsum(dP ∘ P) = rowsum(dO Vᵀ ∘ P) = rowsum(dO ∘ P V) = rowsum(dO ∘ O),
// so one dot product per query replaces a pass over the L x S matrix.
//
// Work is split by key spans (key_span_for() consecutive key blocks): a span's dk_j and dv_j are
// accumulated by one thread over all query blocks, so they need no synchronisation. dq_i receives a
// contribution from every span; to keep the result independent of the thread count, the spans are
// dealt round-robin into a fixed number of groups (key_groups, which depends on the sizes only),
// each group accumulates its own partial dq, and the partials are summed in group order at the end.
// Every addition therefore happens in the same order whatever the number of threads: results are
// bitwise identical for any thread count. Extra memory: padded copies of q, k, d_out, packed k and
// v panels, key_groups partial dq matrices (L x d_k each) and per thread
// O(block_rows x span + span x (d_k + d_v)) scalars -- O(L + S), nothing grows with L x S.

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "attention/detail/row_math.hpp"
#include "attention/kernels/flash.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

// See detail/row_math.hpp: Eigen's packet types as template arguments trip -Wignored-attributes.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
#endif

namespace attention::detail::flash {

/// Keys per unit of work: a span of consecutive key blocks is processed together against each
/// query block, so that a query block's partial dq is read and written once per span rather than
/// once per key block (with N = 4096, d = 128 that traffic cost a third of the dq product at one
/// block). Longer spans cut it further but leave fewer spans to share among threads (and among the
/// key_groups below), so 8 blocks are taken only when the keys still make 8 such spans, 4
/// otherwise: N = 4096, d = 128, one thread, 208.5 -> 203 ms (CPU time, best of 6; 16 blocks were
/// no better).
inline constexpr Index max_key_span = 8;
inline Index key_span_for(Index num_key_blocks) {
  return num_key_blocks >= 8 * max_key_span ? max_key_span : max_key_span / 2;
}

/// Number of partial dq accumulators: enough groups of key spans to keep several threads busy, few
/// enough that their memory (key_groups x L x d_k) stays a small multiple of q's. A function of the
/// sizes only, never of the thread count, so that the summation order is fixed.
inline Index key_groups(Index num_spans) { return std::min<Index>(num_spans, 8); }

/// o (rows x width, row stride ldo) += p (rows x n, row stride ldp) * v (n x width, row stride
/// ldv): rows a multiple of mr, width a multiple of the SIMD width, o aligned. With TransposedP the
/// left factor is pᵀ, p being n x rows (row stride ldp), read in place.
///
/// This and multiply_by_panel are kept out of line (EIGEN_DONT_INLINE): inlined, the five product
/// loops of process_key_span share one huge function body whose register allocation costs the
/// micro-kernels speed (N = 4096, d = 128, one thread: 210-215 -> 209-210 ms; the five products
/// then take ~93% of the time, in their own functions at ~93% of the FMA peak).
template <bool TransposedP = false, typename Scalar>
EIGEN_DONT_INLINE void accumulate_product(const Scalar* p, Index ldp, Index rows, const Scalar* v,
                                          Index ldv, Index n, Scalar* o, Index ldo, Index width) {
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

/// s (rows x block_cols, row stride lds) = a (rows x d, row stride lda) * panelᵀ, where the panel
/// holds block_cols rows of width d transposed (pack_key_block): rows a multiple of mr, s aligned.
template <typename Scalar>
EIGEN_DONT_INLINE void multiply_by_panel(const Scalar* a, Index lda, Index rows,
                                         const Scalar* panel, Index d, Scalar* s, Index lds) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, bc = G::block_cols;
  for (Index r = 0; r < rows; r += mr) {
    for (Index c = 0; c < bc; c += G::nr) {
      qk_micro_kernel<Scalar, mr>(a + r * lda, lda, panel + c, bc, d, s + r * lds + c, lds);
    }
  }
}

/// The inputs of the backward after padding and packing, shared by every thread.
template <typename Scalar>
struct BackwardProblem {
  Index num_queries, num_keys, d_k, d_v, d_k_padded, d_v_padded;
  Scalar scale;
  bool prescaled;          // q below holds scale * q (|scale| <= 1), so q k^T is already scaled
  const Scalar* q;         // rows_padded x d_k_padded, zero past the real entries
  const Scalar* k;         // keys_padded x d_k_padded, zero past the real entries
  const Scalar* k_panels;  // one d_k x block_cols panel per key block (pack_key_block)
  const Scalar* v_panels;  // one d_v x block_cols panel per key block
  const Scalar* d_out;     // rows_padded x d_v_padded, zero past the real entries
  const Scalar* lse;       // rows_padded; -inf for a query that sees no key, and past the last
  const Scalar* delta;     // rows_padded: rowsum(d_out ∘ out)
  Scalar* dk;              // outputs, caller's layout
  Index lddk;
  Scalar* dv;
  Index lddv;
  Scalar* dbias;  // L x S, or null
  Index lddbias;
  Scalar softcap = Scalar(0);  // > 0: s = softcap * tanh(scale * q k^T / softcap) before the mask
};

/// Per-thread scratch: the weights and dS of one (query block, key span) tile, and the accumulators
/// of one key span's dk and dv.
template <typename Scalar>
struct BackwardThreadWorkspace {
  using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;  // aligned to the packet size
  Buffer p, ds, dk_acc, dv_acc;
  Buffer softcap_derivative;  // 1 - tanh^2 of a tile's capped scores; used only with a soft-cap

  void reserve(Index d_k_padded, Index d_v_padded, bool softcap = false) {
    using G = Geometry<Scalar>;
    constexpr Index span_cols = max_key_span * G::block_cols;
    constexpr Index tile = G::block_rows * span_cols;
    for (Buffer* b : {&p, &ds}) {
      if (b->size() < tile) b->resize(tile);
    }
    if (softcap && softcap_derivative.size() < tile) softcap_derivative.resize(tile);
    if (dk_acc.size() < span_cols * d_k_padded) dk_acc.resize(span_cols * d_k_padded);
    if (dv_acc.size() < span_cols * d_v_padded) dv_acc.resize(span_cols * d_v_padded);
  }
};

/// Key span `span` (KeySpan key blocks) against every query block the mask does not hide: writes
/// dk and dv for its keys (and its columns of dbias), and adds its contributions to dq into
/// dq_partial (rows_padded x d_k_padded, unscaled).
template <Index KeySpan, typename Scalar, typename Mask>
void process_key_span(const BackwardProblem<Scalar>& pb, const Mask& mask, Index span,
                      Scalar* dq_partial, unsigned char* dq_block_started,
                      BackwardThreadWorkspace<Scalar>& ws) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, br = G::block_rows, bc = G::block_cols;
  constexpr Index span_cols = KeySpan * bc;  // row stride of the p and ds tiles
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  using Row = Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  const Index dkp = pb.d_k_padded, dvp = pb.d_v_padded;
  const Index col0 = span * span_cols;
  const Index cols = std::min(span_cols, pb.num_keys - col0);
  const Index blocks = (cols + bc - 1) / bc;  // key blocks in this span
  Scalar* const p = ws.p.data();
  Scalar* const ds = ws.ds.data();
  Scalar* const dk_acc = ws.dk_acc.data();
  Scalar* const dv_acc = ws.dv_acc.data();
  const bool capped = pb.softcap > Scalar(0);
  Scalar* const cap_derivative = capped ? ws.softcap_derivative.data() : nullptr;
  std::fill(dk_acc, dk_acc + span_cols * dkp, Scalar(0));
  std::fill(dv_acc, dv_acc + span_cols * dvp, Scalar(0));
  TileVisibility visibility[KeySpan];

  const Index num_query_blocks = (pb.num_queries + br - 1) / br;
  for (Index qb = 0; qb < num_query_blocks; ++qb) {
    const Index row0 = qb * br;
    const Index rows = std::min(br, pb.num_queries - row0);
    const Index rows_padded = round_up(rows, mr);
    bool any_visible = false;
    for (Index b = 0; b < blocks; ++b) {
      const Index block_cols = std::min(bc, cols - b * bc);
      visibility[b] = mask.visibility(row0, rows, col0 + b * bc, block_cols);
      any_visible = any_visible || visibility[b] != TileVisibility::hidden;
    }
    if (!any_visible) continue;  // p = 0: no gradient flows through this tile

    // s = scale * q_i k_j^T + mask (Alg. 2, line 11), one key block at a time; a hidden block is
    // all -inf. Then p = exp(s - lse) (line 13), 0 past the last key and in the padding rows.
    for (Index b = 0; b < blocks; ++b) {
      Scalar* sb = p + b * bc;
      const Index c0 = col0 + b * bc, block_cols = std::min(bc, cols - b * bc);
      if (visibility[b] == TileVisibility::hidden) {
        for (Index r = 0; r < rows; ++r)
          std::fill(sb + r * span_cols, sb + r * span_cols + bc, minus_inf);
        continue;
      }
      multiply_by_panel(pb.q + row0 * dkp, dkp, rows_padded, pb.k_panels + (c0 / bc) * pb.d_k * bc,
                        pb.d_k, sb, span_cols);
      if (!pb.prescaled) {
        for (Index r = 0; r < rows; ++r) Row(sb + r * span_cols, block_cols) *= pb.scale;
      }
      if (capped) {
        // The forward's soft-cap, before the mask; 1 - tanh^2 is kept for ds below.
        for (Index r = 0; r < rows; ++r) {
          softcap_row(sb + r * span_cols, block_cols, pb.softcap,
                      cap_derivative + b * bc + r * span_cols);
        }
      }
      if (visibility[b] == TileVisibility::mixed) {
        mask.apply(sb, span_cols, row0, rows, c0, block_cols);
      }
    }
    for (Index r = 0; r < rows_padded; ++r) {
      Scalar* pr = p + r * span_cols;
      const Scalar lse = pb.lse[row0 + r];
      if (r >= rows || lse == minus_inf) {
        std::fill(pr, pr + span_cols, Scalar(0));  // a padding row, or a query that sees no key
        continue;
      }
      exp_shifted_sum(pr, pr, cols, lse);  // 0 exactly where s = -inf
      std::fill(pr + cols, pr + span_cols, Scalar(0));
    }

    // dv_j += pᵀ do_i (line 16).
    accumulate_product<true>(p, span_cols, span_cols, pb.d_out + row0 * dvp, dvp, rows_padded,
                             dv_acc, dvp, dvp);

    // dp = do_i v_jᵀ (line 17), 0 in hidden blocks; ds = p ∘ (dp − delta) (line 19), in place.
    for (Index b = 0; b < KeySpan; ++b) {
      Scalar* dsb = ds + b * bc;
      if (b >= blocks || visibility[b] == TileVisibility::hidden) {
        for (Index r = 0; r < rows_padded; ++r)
          std::fill(dsb + r * span_cols, dsb + r * span_cols + bc, Scalar(0));
        continue;
      }
      multiply_by_panel(pb.d_out + row0 * dvp, dvp, rows_padded,
                        pb.v_panels + (col0 / bc + b) * pb.d_v * bc, pb.d_v, dsb, span_cols);
    }
    for (Index r = 0; r < rows_padded; ++r) {
      Row dsr(ds + r * span_cols, span_cols);
      dsr = Row(p + r * span_cols, span_cols) * (dsr - pb.delta[row0 + r]);
    }
    if (pb.dbias != nullptr) {
      for (Index r = 0; r < rows; ++r) {
        std::memcpy(pb.dbias + (row0 + r) * pb.lddbias + col0, ds + r * span_cols,
                    sizeof(Scalar) * cols);
      }
    }
    if (capped) {
      // s' = c tanh(s / c): ds = ds' ∘ (1 − tanh²), on the entries that were computed (elsewhere
      // ds is 0 already, and the derivative buffer holds nothing).
      for (Index b = 0; b < blocks; ++b) {
        if (visibility[b] == TileVisibility::hidden) continue;
        const Index block_cols = std::min(bc, cols - b * bc);
        for (Index r = 0; r < rows; ++r) {
          Row(ds + b * bc + r * span_cols, block_cols) *=
              Row(cap_derivative + b * bc + r * span_cols, block_cols);
        }
      }
    }

    // dq_i += ds k_j and dk_j += dsᵀ q_i (lines 20-21), unscaled until the end (dk needs no scale
    // when q was prescaled: scale · dsᵀ q = dsᵀ (scale · q)). The group's partial dq rows of this
    // query block start at 0 the first time it reaches them (rather than all partials being
    // cleared up front: 16 MiB at N = 4096, d = 128, written once more than needed).
    if (dq_block_started[qb] == 0) {
      std::fill(dq_partial + row0 * dkp, dq_partial + (row0 + rows_padded) * dkp, Scalar(0));
      dq_block_started[qb] = 1;
    }
    accumulate_product(ds, span_cols, rows_padded, pb.k + col0 * dkp, dkp, span_cols,
                       dq_partial + row0 * dkp, dkp, dkp);
    accumulate_product<true>(ds, span_cols, span_cols, pb.q + row0 * dkp, dkp, rows_padded, dk_acc,
                             dkp, dkp);
  }

  for (Index c = 0; c < cols; ++c) {
    Scalar* dk_row = pb.dk + (col0 + c) * pb.lddk;
    Scalar* dv_row = pb.dv + (col0 + c) * pb.lddv;
    const Scalar dk_scale = pb.prescaled ? Scalar(1) : pb.scale;
    for (Index x = 0; x < pb.d_k; ++x) dk_row[x] = dk_scale * dk_acc[c * dkp + x];
    std::memcpy(dv_row, dv_acc + c * dvp, sizeof(Scalar) * pb.d_v);
  }
}

/// Caller-owned scratch memory of the backward kernel; buffers only grow.
template <typename Scalar>
struct BackwardWorkspace {
  using Buffer = typename BackwardThreadWorkspace<Scalar>::Buffer;
  Buffer q, k, k_panels, v_panels, d_out, lse, delta, dq_partials;
  // Per (group, query block): whether the group's partial dq rows of that block hold a sum yet.
  std::vector<unsigned char> dq_block_started;
  std::vector<BackwardThreadWorkspace<Scalar>> per_thread;
};

/// The tiled backward: given q (L x d_k), k (S x d_k), v (S x d_v), the forward's output `out`
/// (L x d_v) and log-sum-exp `lse` (L), and d_out (L x d_v), writes dq, dk, dv and, if dbias is not
/// null, dbias (L x S, row stride lddbias); softcap > 0 caps the scores as the forward did. Shapes
/// were checked by the caller; the inputs must be finite (the caller takes the materialising path
/// otherwise); outputs must not alias inputs.
template <typename Scalar, typename Mask>
void attention_backward(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k,
                        ConstMatrixRef<Scalar> v, ConstMatrixRef<Scalar> out, const Scalar* lse,
                        ConstMatrixRef<Scalar> d_out, const Mask& mask, Scalar scale,
                        MatrixRef<Scalar> dq, MatrixRef<Scalar> dk, MatrixRef<Scalar> dv,
                        Scalar* dbias, Index lddbias, BackwardWorkspace<Scalar>& ws,
                        Scalar softcap = Scalar(0)) {
  using G = Geometry<Scalar>;
  constexpr Index br = G::block_rows, bc = G::block_cols;
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  const Index num_queries = q.rows(), num_keys = k.rows(), d_k = q.cols(), d_v = v.cols();
  const Index d_k_padded = round_up(d_k, G::width), d_v_padded = round_up(d_v, G::width);
  const Index key_span = key_span_for((num_keys + bc - 1) / bc);
  const Index span_cols = key_span * bc;
  const Index rows_padded = round_up(num_queries, br), keys_padded = round_up(num_keys, span_cols);
  const Index num_key_blocks = (num_keys + bc - 1) / bc, num_spans = keys_padded / span_cols;
  const Index groups = key_groups(num_spans);
  const auto grow = [](auto& buffer, Index size) {
    if (buffer.size() < size) buffer.resize(size);
  };
  grow(ws.q, rows_padded * d_k_padded);
  grow(ws.k, keys_padded * d_k_padded);
  grow(ws.k_panels, num_key_blocks * d_k * bc);
  grow(ws.v_panels, num_key_blocks * d_v * bc);
  grow(ws.d_out, rows_padded * d_v_padded);
  grow(ws.lse, rows_padded);
  grow(ws.delta, rows_padded);
  grow(ws.dq_partials, groups * rows_padded * d_k_padded);
  const Index num_query_blocks = rows_padded / br;
  ws.dq_block_started.assign(static_cast<std::size_t>(groups * num_query_blocks), 0);
  const int threads = thread_count(std::max(groups, rows_padded / br));
  if (static_cast<int>(ws.per_thread.size()) < threads) ws.per_thread.resize(threads);
  for (auto& t : ws.per_thread) t.reserve(d_k_padded, d_v_padded, softcap > Scalar(0));

  // As in the forward (kernels/flash.hpp), a scale of magnitude <= 1 multiplies q rather than
  // q . k, whose raw value could overflow where the scaled score does not.
  const bool prescaled = std::abs(scale) <= Scalar(1);
  const BackwardProblem<Scalar> pb{num_queries,
                                   num_keys,
                                   d_k,
                                   d_v,
                                   d_k_padded,
                                   d_v_padded,
                                   scale,
                                   prescaled,
                                   ws.q.data(),
                                   ws.k.data(),
                                   ws.k_panels.data(),
                                   ws.v_panels.data(),
                                   ws.d_out.data(),
                                   ws.lse.data(),
                                   ws.delta.data(),
                                   dk.data(),
                                   dk.outerStride(),
                                   dv.data(),
                                   dv.outerStride(),
                                   dbias,
                                   lddbias,
                                   softcap};
  Scalar* const q_pad = ws.q.data();
  Scalar* const k_pad = ws.k.data();
  Scalar* const d_out_pad = ws.d_out.data();
  Scalar* const lse_pad = ws.lse.data();
  Scalar* const delta = ws.delta.data();
  Scalar* const partials = ws.dq_partials.data();
  unsigned char* const started = ws.dq_block_started.data();
  const Index partial_size = rows_padded * d_k_padded;
  // The mask bound to this call's L and S once (mask.hpp); every tile asks the bound form.
  const auto& bound_mask = detail::bind_mask(mask, num_queries, num_keys);

#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
    // Padded copies (zero past the real rows and columns), delta = rowsum(d_out ∘ out) (Alg. 2,
    // line 4), the packed panels, and zeroed partial dq.
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
    for (Index i = 0; i < rows_padded; ++i) {
      Scalar* qi = q_pad + i * d_k_padded;
      Scalar* doi = d_out_pad + i * d_v_padded;
      std::fill(qi, qi + d_k_padded, Scalar(0));
      std::fill(doi, doi + d_v_padded, Scalar(0));
      if (i < num_queries) {
        Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> qi_row(qi, d_k);
        qi_row = q.row(i).array();
        if (prescaled) qi_row *= scale;
        std::memcpy(doi, d_out.data() + i * d_out.outerStride(), sizeof(Scalar) * d_v);
        delta[i] = (d_out.row(i).array() * out.row(i).array()).sum();
        lse_pad[i] = lse[i];
      } else {
        delta[i] = 0;
        lse_pad[i] = minus_inf;
      }
    }
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
    for (Index j = 0; j < keys_padded; ++j) {
      Scalar* kj = k_pad + j * d_k_padded;
      std::fill(kj, kj + d_k_padded, Scalar(0));
      if (j < num_keys) std::memcpy(kj, k.data() + j * k.outerStride(), sizeof(Scalar) * d_k);
    }
#if defined(_OPENMP)
#pragma omp for schedule(static) nowait
#endif
    for (Index kb = 0; kb < num_key_blocks; ++kb) {
      pack_key_block(k.data(), k.outerStride(), num_keys, d_k, kb,
                     ws.k_panels.data() + kb * d_k * bc);
      pack_key_block(v.data(), v.outerStride(), num_keys, d_v, kb,
                     ws.v_panels.data() + kb * d_v * bc);
    }
#if defined(_OPENMP)
#pragma omp barrier
#endif

#if defined(_OPENMP)
    BackwardThreadWorkspace<Scalar>& tws =
        ws.per_thread[static_cast<std::size_t>(omp_get_thread_num())];
#else
    BackwardThreadWorkspace<Scalar>& tws = ws.per_thread[0];
#endif
    // Group g takes key spans g, g + groups, g + 2 groups, ...: under a causal mask the late
    // (cheap) and early (expensive) spans mix, so the groups carry similar work.
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (Index g = 0; g < groups; ++g) {
      for (Index span = g; span < num_spans; span += groups) {
        Scalar* const dq_partial = partials + g * partial_size;
        unsigned char* const dq_started = started + g * num_query_blocks;
        if (key_span == max_key_span) {
          process_key_span<max_key_span>(pb, bound_mask, span, dq_partial, dq_started, tws);
        } else {
          process_key_span<max_key_span / 2>(pb, bound_mask, span, dq_partial, dq_started, tws);
        }
      }
    }

    // dq = scale · sum over groups of the partials, in group order (deterministic); a group that
    // never reached a query block contributes nothing there (its rows were never written).
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index i = 0; i < num_queries; ++i) {
      Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> dq_row(dq.data() + i * dq.outerStride(),
                                                                 d_k);
      dq_row.setZero();
      for (Index g = 0; g < groups; ++g) {
        if (started[g * num_query_blocks + i / br] == 0) continue;
        dq_row += Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(
            partials + g * partial_size + i * d_k_padded, d_k);
      }
      dq_row *= scale;
    }
  }
}

}  // namespace attention::detail::flash

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
