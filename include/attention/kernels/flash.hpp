#pragma once
// SPDX-License-Identifier: MIT
//
// Tiled, streaming scaled dot-product attention (FlashAttention-2 forward, Dao 2023, Alg. 1) on the
// CPU. It never holds the L x S score matrix: each thread takes a tile of block_rows queries and
// walks the key tiles, keeping per query row a running max m, a running sum l and an unnormalised
// output accumulator o (the online softmax of Milakov & Gimelshein, 2018):
//
//   s      = scale * q_tile k_tile^T  (+ mask)                        block_rows x block_cols
//            (with a soft-cap, s = softcap * tanh(scale * q k^T / softcap) (+ mask))
//   m_new  = max(m, rowmax(s))
//   p      = exp(s - m_new)                                           (0 exactly where s = -inf)
//   l      = exp(m - m_new) * l + rowsum(p)
//   o      = exp(m - m_new) * o + p v_tile
//   finally out = o / l and lse = m + log(l) per row.
//
// Extra memory: K packed once per call (S x d_k, transposed into panels so the micro-kernel reads
// contiguous vectors of keys), V packed only when d_v is not a whole number of SIMD vectors, and
// per thread O(block_rows x (block_cols + d_k + d_v)) scalars. Nothing grows with L x S.
//
// SIMD: the micro-kernels use Eigen's packet primitives (pset1, pload, pmadd, pexp), so one source
// compiles to SSE2, AVX2/FMA, AVX-512 or NEON, whichever the user's flags enable, with no further
// dependency; Eigen already ships the vectorised exp() we need. Register blocking: an mr x (np
// vectors) block of the output lives in registers while the inner dimension streams through.
//
// Threads: with OpenMP, query tiles are shared out among Eigen::nbThreads() threads (which follows
// OMP_NUM_THREADS, omp_set_num_threads and Eigen::setNbThreads). Every tile is computed by exactly
// one thread with the same instruction sequence whatever the thread count, so results are bitwise
// identical for any number of threads.

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "attention/detail/row_math.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/types.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

// See detail/row_math.hpp: Eigen's packet types as template arguments trip -Wignored-attributes.
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

namespace attention {
namespace detail::flash {

template <typename Scalar>
using Packet = typename Eigen::internal::packet_traits<Scalar>::type;

/// True where the tiled kernel applies: Eigen vectorises the scalar type and has a packet exp().
template <typename Scalar>
inline constexpr bool supported = std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>;

/// Tile geometry. mr rows x (2 vectors) of accumulators must fit the register file with room for
/// the operands: 32 vector registers with AVX-512, 16 otherwise.
template <typename Scalar>
struct Geometry {
  static constexpr Index width = Eigen::internal::packet_traits<Scalar>::size;
#if defined(EIGEN_VECTORIZE_AVX512)
  static constexpr Index mr = 8;
#else
  static constexpr Index mr = 4;
#endif
  static constexpr Index nr = 2 * width;          // key columns per micro-tile of q k^T
  static constexpr Index block_rows = 8 * mr;     // queries per tile (Br)
  static constexpr Index block_cols = 4 * width;  // keys per tile (Bc), a multiple of nr
};

inline Index round_up(Index n, Index multiple) { return (n + multiple - 1) / multiple * multiple; }

/// s (mr x nr, row stride lds) = q (mr x d, row stride ldq) * kp, where kp is a packed panel of
/// d rows of nr (or more, row stride ldk) key entries: kp[kk * ldk + j] = k(j, kk).
template <typename Scalar, int MR>
inline void qk_micro_kernel(const Scalar* q, Index ldq, const Scalar* kp, Index ldk, Index d,
                            Scalar* s, Index lds) {
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index w = Geometry<Scalar>::width;
  P c0[MR], c1[MR];
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = pset1<P>(Scalar(0));
  for (Index kk = 0; kk < d; ++kk) {
    const P b0 = pload<P>(kp + kk * ldk);
    const P b1 = pload<P>(kp + kk * ldk + w);
    ATTENTION_UNROLL
    for (int r = 0; r < MR; ++r) {
      const P a = pset1<P>(q[r * ldq + kk]);
      c0[r] = pmadd(a, b0, c0[r]);
      c1[r] = pmadd(a, b1, c1[r]);
    }
  }
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    pstore(s + r * lds, c0[r]);
    pstore(s + r * lds + w, c1[r]);
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
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index w = Geometry<Scalar>::width;
  P c[MR][NP];
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) c[r][x] = pset1<P>(Scalar(0));
  }
  for (Index j = 0; j < n; ++j) {
    P b[NP];
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) b[x] = ploadu<P>(v + j * ldv + x * w);
    ATTENTION_UNROLL
    for (int r = 0; r < MR; ++r) {
      const P a = pset1<P>(TransposedP ? p[j * ldp + r] : p[r * ldp + j]);
      ATTENTION_UNROLL
      for (int x = 0; x < NP; ++x) c[r][x] = pmadd(a, b[x], c[r][x]);
    }
  }
  ATTENTION_UNROLL
  for (int r = 0; r < MR; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) {
      pstore(o + r * ldo + x * w, padd(pload<P>(o + r * ldo + x * w), c[r][x]));
    }
  }
}

/// NaN-propagating max: once a row has seen a NaN score it stays NaN (and so does its output).
template <typename Scalar>
inline Scalar max_propagate_nan(Scalar a, Scalar b) {
  if (a != a) return a;
  if (b != b) return b;
  return a < b ? b : a;
}

/// max |v| over `rows` rows of `cols` values (row stride ldv): NaN if some value is NaN, else inf
/// if some value is infinite.
template <typename Scalar>
Scalar max_abs(const Scalar* v, Index ldv, Index rows, Index cols) {
  Scalar m(0);
  for (Index j = 0; j < rows; ++j) {
    m = max_propagate_nan(
        m, Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(v + j * ldv, cols)
               .abs()
               .template maxCoeff<Eigen::PropagateNaN>());
  }
  return m;
}

/// max |v| over the finite values of `rows` rows of `cols` (row stride ldv); 0 if none.
template <typename Scalar>
Scalar max_abs_finite(const Scalar* v, Index ldv, Index rows, Index cols) {
  Scalar m(0);
  for (Index j = 0; j < rows; ++j) {
    const Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>> row(v + j * ldv, cols);
    m = std::max(m, row.isFinite().select(row.abs(), Scalar(0)).maxCoeff());
  }
  return m;
}

/// x[0..n) *= scale; returns the (NaN-propagating) max of the scaled values.
template <typename Scalar>
inline Scalar scale_and_max(Scalar* x, Index n, Scalar scale) {
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index w = Geometry<Scalar>::width;
  Index j = 0;
  Scalar m = -std::numeric_limits<Scalar>::infinity();
  if (n >= w) {
    const P sp = pset1<P>(scale);
    P mp = pset1<P>(m);
    for (; j + w <= n; j += w) {
      const P v = pmul(pload<P>(x + j), sp);
      pstore(x + j, v);
      mp = pmax<Eigen::PropagateNaN>(mp, v);
    }
    m = predux_max<Eigen::PropagateNaN>(mp);
  }
  for (; j < n; ++j) {
    x[j] *= scale;
    m = max_propagate_nan(m, x[j]);
  }
  return m;
}

/// Caller-owned scratch memory for one thread of the kernel. Reusable across calls; grows as
/// needed.
template <typename Scalar>
struct ThreadWorkspace {
  using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;  // aligned to the packet size
  Buffer q_tile, scores, o_acc, row_max, row_sum;

  void reserve(Index d_k, Index d_v_padded) {
    using G = Geometry<Scalar>;
    resize_at_least(q_tile, G::block_rows * d_k);
    resize_at_least(scores, G::block_rows * G::block_cols);
    resize_at_least(o_acc, G::block_rows * d_v_padded);
    resize_at_least(row_max, G::block_rows);
    resize_at_least(row_sum, G::block_rows);
  }

 private:
  static void resize_at_least(Buffer& b, Index n) {
    if (b.size() < n) b.resize(n);
  }
};

/// One head's operands: row pointers and row strides (entries within a row are contiguous).
template <typename Scalar>
struct HeadOperands {
  const Scalar* q;
  Index ldq;
  const Scalar* k;
  Index ldk;
  const Scalar* v;
  Index ldv;
  Scalar* out;
  Index ldo;
  Scalar* lse;  // num_queries log-sum-exps, or null
};

/// Everything the tiles of one head share: its operands after packing, and the sizes.
template <typename Scalar>
struct Problem {
  const Scalar* q;
  Index ldq;
  Index num_queries, num_keys, d_k, d_v;
  const Scalar* k_packed;  // num_key_blocks panels of d_k x block_cols
  const Scalar* v;         // packed or the caller's rows
  Index ldv;
  Index d_v_padded;
  Scalar scale;
  Scalar* out;
  Index ldo;
  Scalar* lse;                 // may be null
  bool values_finite;          // false: some value is NaN or inf, and p v must skip zero weights
  Scalar softcap = Scalar(0);  // > 0: scores become softcap * tanh(s / softcap) before the mask
  Scalar output_scale = Scalar(1);  // a power of two undoing the packed values' rescale, else 1
};

/// One query tile [row0, row0 + rows) against every key tile the mask does not hide.
template <typename Scalar, typename Mask>
void process_query_tile(const Problem<Scalar>& pb, const Mask& mask, Index row0, Index rows,
                        ThreadWorkspace<Scalar>& ws) {
  using G = Geometry<Scalar>;
  constexpr Index mr = G::mr, br = G::block_rows, bc = G::block_cols, w = G::width;
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  const Index d = pb.d_k, dvp = pb.d_v_padded;
  const Index rows_padded = round_up(rows, mr);

  // Copy the query tile into contiguous rows, zero-padded to a multiple of mr rows, so the
  // micro-kernel never reads past the caller's last query. A scale of magnitude <= 1 (the default
  // 1 / sqrt(d_k) always is) is applied here, to q, rather than to q . k: the raw dot product
  // could overflow where the scaled score does not (a scale of 0 would then give 0 * inf = NaN).
  Scalar* qt = ws.q_tile.data();
  const bool prescale = std::abs(pb.scale) <= Scalar(1);
  const Scalar score_scale = prescale ? Scalar(1) : pb.scale;
  for (Index r = 0; r < rows; ++r) {
    Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> dst(qt + r * d, d);
    const Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>> src(pb.q + (row0 + r) * pb.ldq,
                                                                        d);
    if (prescale) {
      dst = src * pb.scale;
    } else {
      dst = src;
    }
  }
  std::fill(qt + rows * d, qt + rows_padded * d, Scalar(0));

  Scalar* o = ws.o_acc.data();
  Scalar* m = ws.row_max.data();
  Scalar* l = ws.row_sum.data();
  std::fill(o, o + rows_padded * dvp, Scalar(0));
  std::fill(m, m + br, minus_inf);
  std::fill(l, l + br, Scalar(0));
  Scalar* s = ws.scores.data();

  const Index num_key_blocks = (pb.num_keys + bc - 1) / bc;
  for (Index kb = 0; kb < num_key_blocks; ++kb) {
    const Index col0 = kb * bc;
    const Index cols = std::min(bc, pb.num_keys - col0);
    const TileVisibility visibility = mask.visibility(row0, rows, col0, cols);
    if (visibility == TileVisibility::hidden) continue;  // contributes exp(-inf) = 0 to every row

    // s = q_tile k_tile^T (Alg. 1, line 8), mr x nr micro-tiles over the padded tile.
    const Scalar* kp = pb.k_packed + kb * d * bc;
    for (Index r = 0; r < rows_padded; r += mr) {
      for (Index c = 0; c < bc; c += G::nr) {
        qk_micro_kernel<Scalar, mr>(qt + r * d, d, kp + c, bc, d, s + r * bc + c, bc);
      }
    }

    // Scale, soft-cap, mask, and the online softmax update (Alg. 1, lines 9-10), one row at a
    // time. The soft-cap s = softcap * tanh(s / softcap) (Options::softcap) comes before the mask.
    const bool scale_here = !prescale;
    const bool capped = pb.softcap > Scalar(0);
    if (visibility == TileVisibility::mixed || capped) {
      for (Index r = 0; r < rows; ++r) {
        if (scale_here) {
          Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(s + r * bc, cols) *= score_scale;
        }
        if (capped) softcap_row(s + r * bc, cols, pb.softcap);
      }
      if (visibility == TileVisibility::mixed) mask.apply(s, bc, row0, rows, col0, cols);
    }
    for (Index r = 0; r < rows; ++r) {
      Scalar* sr = s + r * bc;
      const Scalar tile_max = visibility == TileVisibility::mixed || capped || !scale_here
                                  ? row_max(sr, cols)
                                  : scale_and_max(sr, cols, score_scale);
      const Scalar m_new = max_propagate_nan(m[r], tile_max);
      if (m_new == minus_inf) {
        // Nothing visible to this row yet: p = 0 here, and m, l, o stay as they are. (Skipping
        // also avoids exp(-inf - -inf) = NaN in the rescale.)
        std::fill(sr, sr + cols, Scalar(0));
        continue;
      }
      const Scalar row_sum = exp_shifted_sum(sr, sr, cols, m_new);
      if (m_new != m[r]) {
        // The running max grew: rescale what was accumulated under the old max by exp(m - m_new)
        // (0 when m was -inf, and then l and o are 0 anyway).
        const Scalar alpha = std::exp(m[r] - m_new);
        l[r] *= alpha;
        Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(o + r * dvp, dvp) *= alpha;
        m[r] = m_new;
      }
      l[r] += row_sum;
    }
    // Padding rows and columns must contribute nothing to p v.
    for (Index r = rows; r < rows_padded; ++r) std::fill(s + r * bc, s + r * bc + cols, Scalar(0));

    // o += p v_tile (Alg. 1, line 10), mr x (2 vectors) micro-tiles, then a 1-vector tail.
    const Scalar* vt = pb.v + col0 * pb.ldv;
    if (!pb.values_finite) {
      // A weight of exactly 0 (a masked key, or one whose exp() underflowed) must add nothing,
      // even when its value row holds a NaN or inf, where 0 * NaN would be NaN.
      for (Index r = 0; r < rows; ++r) {
        Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>> o_row(o + r * dvp, pb.d_v);
        for (Index j = 0; j < cols; ++j) {
          const Scalar p = s[r * bc + j];
          if (p != Scalar(0)) {
            o_row += p * Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(vt + j * pb.ldv,
                                                                                   pb.d_v);
          }
        }
      }
      continue;
    }
    for (Index r = 0; r < rows_padded; r += mr) {
      Index c = 0;
      for (; c + 2 * w <= dvp; c += 2 * w) {
        pv_micro_kernel<Scalar, mr, 2>(s + r * bc, bc, vt + c, pb.ldv, cols, o + r * dvp + c, dvp);
      }
      if (c < dvp) {
        pv_micro_kernel<Scalar, mr, 1>(s + r * bc, bc, vt + c, pb.ldv, cols, o + r * dvp + c, dvp);
      }
    }
  }

  // out = o / l (Alg. 1, line 12), lse = m + log(l) (line 13). A row that saw no visible key has
  // l = 0: its output is 0 and its log-sum-exp -inf.
  for (Index r = 0; r < rows; ++r) {
    Scalar* out_row = pb.out + (row0 + r) * pb.ldo;
    const Scalar* o_row = o + r * dvp;
    if (l[r] == Scalar(0)) {
      std::fill(out_row, out_row + pb.d_v, Scalar(0));
    } else if (pb.output_scale == Scalar(1)) {
      for (Index c = 0; c < pb.d_v; ++c) out_row[c] = o_row[c] / l[r];
    } else {
      for (Index c = 0; c < pb.d_v; ++c) out_row[c] = o_row[c] / l[r] * pb.output_scale;
    }
    if (pb.lse != nullptr) pb.lse[row0 + r] = l[r] == Scalar(0) ? minus_inf : m[r] + std::log(l[r]);
  }
}

/// Packs key block kb of k (num_keys x d_k, row stride ldk) as a d_k x block_cols panel,
/// transposed and zero-padded past the last key.
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

inline int thread_count(Index work_items) {
#if defined(_OPENMP)
  return static_cast<int>(std::max<Index>(1, std::min<Index>(Eigen::nbThreads(), work_items)));
#else
  (void)work_items;
  return 1;
#endif
}

// ---- Split-key decode: few queries, many keys ---------------------------------------------------
//
// A decoder's step has L = 1 query (or a few) per head against S cached keys: the query tiles above
// would give one tile per head, and with them one thread to a head and a K panel packed per call
// (one more pass over K than the attention itself needs). Instead, as in flash-decoding (Dao,
// Haziza, Massa & Sizov, 2023), the keys are cut into chunks of decode_chunk keys, and each
// (K/V head, chunk) part computes attention over its chunk alone as a partial result -- per row
// the chunk's max m_c, sum l_c = sum_j exp(s_j - m_c) and normalised o_c = sum_j exp(s_j - m_c)
// v_j / l_c (partial.hpp's PartialAttention, with lse_c = m_c + log l_c). The parts are then merged
// per row in chunk order (partial.hpp's formula):
//   M = max_c m_c, l = sum_c exp(m_c - M) l_c, out = sum_c (exp(m_c - M) l_c / l) o_c,
//   lse = M + log l
// a convex combination of convex combinations of v's rows, which cannot overflow where the result
// is finite (an unnormalised sum would reach S max|v|).
// Chunks are fixed by S alone and merged in a fixed order, so the result is bitwise identical for
// any thread count. The query heads that share a K/V head (grouped-query attention) are stacked as
// rows of its parts, so K and V are read once per call, in place.
//
// The step is memory-bound: ~4 FLOPs per (8-byte) pair of K and V entries read, well below what a
// core computes in the time memory delivers them. So the order of the reads is what counts. In a
// KV cache a token's K/V heads sit side by side in one row (8 heads x 128 floats = 4 KiB), so one
// head's keys are a page apart, where the hardware prefetcher does not follow; a job per (K/V
// head, chunk) reads 512 bytes of every 4 KiB, and a plain sum over that pattern reached half the
// bandwidth of a sum over the same bytes in address order (8-10 against 18-21 GB/s, one Zen 4
// core, 256 MiB). A job is therefore one chunk of every K/V head (or of a slice of them, when
// there are too few chunks to share among the threads): it walks the chunk's keys a step of
// decode_step keys at a time across all its K/V heads -- whole rows, in address order -- first
// computing the scores q k^T, then, after the chunk's softmax statistics, o = p v. While it
// computes a step it asks for the next step's rows, into L2 (prefetcht1: a step of 16 rows is
// 64 KiB, twice the L1; on Zen 4 this loop ran at about half the speed with prefetcht0 or with no
// prefetch at all). A query row's scores are dot products along d (vectorised along d, not across
// keys as in the tiles above), so these rows round differently from the same rows computed by the
// query tiles (a call with more queries): both are within the same bound. A part's arithmetic does
// not depend on which job, step or thread computes it.

/// Keys per chunk of the decode path (a multiple of every Geometry<Scalar>::block_cols).
inline constexpr Index decode_chunk = 256;
/// Keys per step of a decode job (a divisor of decode_chunk).
inline constexpr Index decode_step = 16;
/// The decode path serves calls of at most this many queries against at least 2 chunks of keys.
inline constexpr Index decode_max_queries = 16;

/// True when multi_head_attention takes the split-key decode path (sizes only, never the thread
/// count, so that the result does not depend on it).
inline bool use_decode_path(Index num_queries, Index num_keys) {
  return num_queries <= decode_max_queries && num_keys >= 2 * decode_chunk;
}

/// Buffers of the decode path: every group's query rows, the partial results of every (K/V head,
/// chunk) pair, and per-thread scores.
template <typename Scalar>
struct DecodeBuffers {
  using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;  // aligned to the packet size
  Buffer q_rows, partial_o, partial_m, partial_l;
  std::vector<Buffer> scores;

  void reserve(Index num_groups, Index num_chunks, Index groups_per_job, Index rows_padded,
               Index d_padded, Index d_v_padded, int threads) {
    const Index parts = num_groups * num_chunks;
    grow(q_rows, num_groups * rows_padded * d_padded);
    grow(partial_o, parts * rows_padded * d_v_padded);
    grow(partial_m, parts * rows_padded);
    grow(partial_l, parts * rows_padded);
    if (static_cast<int>(scores.size()) < threads) scores.resize(static_cast<std::size_t>(threads));
    for (auto& b : scores) grow(b, groups_per_job * rows_padded * decode_chunk);
  }

 private:
  static void grow(Buffer& b, Index n) {
    if (b.size() < n) b.resize(n);
  }
};

/// Scratch memory of one call: packed keys and values for every head, and one ThreadWorkspace per
/// thread. Buffers only grow, so a workspace reused for calls of the same or smaller sizes (and no
/// more threads) allocates nothing after the first.
template <typename Scalar>
struct CallWorkspace {
  using Buffer = typename ThreadWorkspace<Scalar>::Buffer;
  Buffer k_packed, v_packed;
  std::vector<ThreadWorkspace<Scalar>> per_thread;
  DecodeBuffers<Scalar> decode;  // the split-key decode path's (decode_attention)

  void reserve(Index k_size, Index v_size, int threads, Index d_k, Index d_v_padded) {
    if (k_packed.size() < k_size) k_packed.resize(k_size);
    if (v_packed.size() < v_size) v_packed.resize(v_size);
    if (static_cast<int>(per_thread.size()) < threads) per_thread.resize(threads);
    for (auto& ws : per_thread) ws.reserve(d_k, d_v_padded);
  }
};

/// Asks for the cache lines of x[0 .. n) ahead of use.
template <typename Scalar>
inline void prefetch_row(const Scalar* x, Index n) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr Index line = 64 / static_cast<Index>(sizeof(Scalar));
  for (Index t = 0; t < n; t += line) __builtin_prefetch(x + t, 0, 2);
#else
  (void)x;
  (void)n;
#endif
}

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
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index w = Geometry<Scalar>::width;
  const Index d_full = d / w * w;
  for (Index j = 0; j < cols; ++j) {
    const Scalar* kj = k + j * ldk;
    if (j < ahead.count) prefetch_row(ahead.first + j * ahead.stride, ahead.width);
    for (Index r = 0; r < rows_padded; r += 4) {
      const Scalar* q0 = q + r * d_padded;
      P a0 = pset1<P>(Scalar(0)), a1 = a0, a2 = a0, a3 = a0;
      for (Index t = 0; t < d_full; t += w) {
        const P kp = ploadu<P>(kj + t);
        a0 = pmadd(pload<P>(q0 + t), kp, a0);
        a1 = pmadd(pload<P>(q0 + d_padded + t), kp, a1);
        a2 = pmadd(pload<P>(q0 + 2 * d_padded + t), kp, a2);
        a3 = pmadd(pload<P>(q0 + 3 * d_padded + t), kp, a3);
      }
      Scalar s0 = predux(a0), s1 = predux(a1), s2 = predux(a2), s3 = predux(a3);
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
  using namespace Eigen::internal;
  using P = Packet<Scalar>;
  constexpr Index w = Geometry<Scalar>::width;
  P c[4][NP];
  ATTENTION_UNROLL
  for (int r = 0; r < 4; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) c[r][x] = pset1<P>(Scalar(0));
  }
  for (Index j = 0; j < n; ++j) {
    if (j < ahead.count) prefetch_row(ahead.first + j * ahead.stride, ahead.width);
    P b[NP];
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) b[x] = ploadu<P>(v + j * ldv + x * w);
    ATTENTION_UNROLL
    for (int r = 0; r < 4; ++r) {
      const P a = pset1<P>(p[r * ldp + j]);
      ATTENTION_UNROLL
      for (int x = 0; x < NP; ++x) c[r][x] = pmadd(a, b[x], c[r][x]);
    }
  }
  ATTENTION_UNROLL
  for (int r = 0; r < 4; ++r) {
    ATTENTION_UNROLL
    for (int x = 0; x < NP; ++x) {
      pstore(o + r * ldo + x * w, padd(pload<P>(o + r * ldo + x * w), c[r][x]));
    }
  }
}

/// o (rows_padded x d_v, row stride ldo) += p (rows_padded x n, row stride ldp) v (n x d_v, row
/// stride ldv). Asks for row j of `ahead` (d_v wide) alongside key j, on the first 4 rows.
template <typename Scalar>
inline void decode_values(const Scalar* p, Index ldp, Index rows_padded, const Scalar* v, Index ldv,
                          Index n, Index d_v, Scalar* o, Index ldo,
                          const RowsAhead<Scalar>& ahead) {
  constexpr Index w = Geometry<Scalar>::width;
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
        prefetch_row(ahead.first + j * ahead.stride + d_v_full, d_v - d_v_full);
      }
    }
  }
}

/// Attention for num_heads heads (as multi_head_attention) by the split-key decode path above.
/// heads_per_kv consecutive query heads share one K/V head (the same k, ldk, v and ldv).
template <typename Scalar, typename Mask>
void decode_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                      Index num_keys, Index d, Index d_v, Scalar scale, const Mask& mask,
                      CallWorkspace<Scalar>& workspace, Index heads_per_kv = 1,
                      Scalar softcap = Scalar(0)) {
  using G = Geometry<Scalar>;
  using Row = Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  using ConstRow = Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>;
  constexpr Index w = G::width, chunk = decode_chunk, step = decode_step;
  constexpr Scalar minus_inf = -std::numeric_limits<Scalar>::infinity();
  eigen_assert(heads_per_kv >= 1 && num_heads % heads_per_kv == 0);
  const Index num_groups = num_heads / heads_per_kv;
  const Index rows = heads_per_kv * num_queries;  // stacked: row hg * L + l is query l of head hg
  // The mask bound to this call's L and S once (mask.hpp); every chunk asks the bound form.
  const auto& bound_mask = detail::bind_mask(mask, num_queries, num_keys);
  const Index rows_padded = round_up(rows, 4);
  const Index d_padded = round_up(d, w), d_v_padded = round_up(d_v, w);
  const Index num_chunks = (num_keys + chunk - 1) / chunk;
  // A job is one chunk of every K/V head in a slice of them; slices only when there are too few
  // chunks to give every thread about four jobs. A (K/V head, chunk) part is computed the same
  // way whatever job holds it.
  const int max_threads = thread_count(num_chunks * num_groups);
  const Index wanted_jobs = Index{4} * max_threads;
  const Index slices =
      std::min(num_groups, std::max<Index>(1, (wanted_jobs + num_chunks - 1) / num_chunks));
  const Index groups_per_job = (num_groups + slices - 1) / slices;
  const Index jobs = num_chunks * ((num_groups + groups_per_job - 1) / groups_per_job);
  const Index jobs_per_chunk = jobs / num_chunks;
  const int threads = thread_count(jobs);
  DecodeBuffers<Scalar>& buffers = workspace.decode;
  buffers.reserve(num_groups, num_chunks, groups_per_job, rows_padded, d_padded, d_v_padded,
                  threads);
  const bool prescale = std::abs(scale) <= Scalar(1);  // as process_query_tile
  Scalar* const partial_o = buffers.partial_o.data();
  Scalar* const partial_m = buffers.partial_m.data();
  Scalar* const partial_l = buffers.partial_l.data();
  Scalar* const q_rows = buffers.q_rows.data();

  // Every group's query rows, scaled as in process_query_tile, zero-padded to d_padded columns and
  // rows_padded rows.
  for (Index g = 0; g < num_groups; ++g) {
    for (Index r = 0; r < rows_padded; ++r) {
      Row dst(q_rows + (g * rows_padded + r) * d_padded, d_padded);
      if (r >= rows) {
        dst.setZero();
        continue;
      }
      const HeadOperands<Scalar>& h = heads[g * heads_per_kv + r / num_queries];
      const ConstRow src(h.q + (r % num_queries) * h.ldq, d);
      if (prescale) {
        dst.head(d) = src * scale;
      } else {
        dst.head(d) = src;
      }
      dst.tail(d_padded - d).setZero();
    }
  }

#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
#if defined(_OPENMP)
    const auto thread = static_cast<std::size_t>(omp_get_thread_num());
#else
    const std::size_t thread = 0;
#endif
    Scalar* const s_thread = buffers.scores[thread].data();
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
    for (Index job = 0; job < jobs; ++job) {
      const Index c = job / jobs_per_chunk;
      const Index g_begin = job % jobs_per_chunk * groups_per_job;
      const Index g_end = std::min(num_groups, g_begin + groups_per_job);
      const Index col0 = c * chunk, cols = std::min(chunk, num_keys - col0);
      const auto part = [&](Index g) { return (g * num_chunks + c) * rows_padded; };
      const auto scores = [&](Index g) { return s_thread + (g - g_begin) * rows_padded * chunk; };
      const TileVisibility visibility = bound_mask.visibility(0, num_queries, col0, cols);
      if (visibility == TileVisibility::hidden) {
        for (Index g = g_begin; g < g_end; ++g) {
          std::fill(partial_m + part(g), partial_m + part(g) + rows, minus_inf);
          std::fill(partial_l + part(g), partial_l + part(g) + rows, Scalar(0));
        }
        continue;
      }
      // s = q k^T, a step of keys at a time across the K/V heads.
      for (Index j0 = 0; j0 < cols; j0 += step) {
        const Index n = std::min(step, cols - j0);
        for (Index g = g_begin; g < g_end; ++g) {
          const HeadOperands<Scalar>& kv = heads[g * heads_per_kv];
          // The next step's keys; after the last, the chunk's first values.
          const RowsAhead<Scalar> ahead =
              j0 + n < cols
                  ? RowsAhead<Scalar>{kv.k + (col0 + j0 + n) * kv.ldk, kv.ldk, d,
                                      std::min(step, cols - j0 - n)}
                  : RowsAhead<Scalar>{kv.v + col0 * kv.ldv, kv.ldv, d_v, std::min(step, cols)};
          decode_scores(q_rows + g * rows_padded * d_padded, rows_padded, d_padded, d,
                        kv.k + (col0 + j0) * kv.ldk, kv.ldk, n, scores(g) + j0, chunk, ahead);
        }
      }
      // The chunk's softmax statistics per row, p = exp(s - m_c) in place (0 exactly where
      // s = -inf).
      for (Index g = g_begin; g < g_end; ++g) {
        Scalar* const s = scores(g);
        if (!prescale) {
          for (Index r = 0; r < rows; ++r) Row(s + r * chunk, cols) *= scale;
        }
        if (softcap > Scalar(0)) {
          // Options::softcap, before the mask, as in process_query_tile.
          for (Index r = 0; r < rows; ++r) softcap_row(s + r * chunk, cols, softcap);
        }
        if (visibility == TileVisibility::mixed) {
          for (Index hg = 0; hg < heads_per_kv; ++hg) {
            bound_mask.apply(s + hg * num_queries * chunk, chunk, 0, num_queries, col0, cols);
          }
        }
        Scalar* const m = partial_m + part(g);
        Scalar* const l = partial_l + part(g);
        for (Index r = 0; r < rows_padded; ++r) {
          Scalar* sr = s + r * chunk;
          const Scalar mx = r < rows ? row_max(sr, cols) : minus_inf;
          if (mx == minus_inf) {
            std::fill(sr, sr + cols, Scalar(0));
            if (r < rows) {
              m[r] = minus_inf;
              l[r] = Scalar(0);
            }
            continue;
          }
          l[r] = exp_shifted_sum(sr, sr, cols, mx);
          m[r] = mx;
        }
        std::fill(partial_o + part(g) * d_v_padded,
                  partial_o + (part(g) + rows_padded) * d_v_padded, Scalar(0));
      }
      // o_c = p v_chunk, a step of keys at a time across the K/V heads.
      for (Index j0 = 0; j0 < cols; j0 += step) {
        const Index n = std::min(step, cols - j0);
        for (Index g = g_begin; g < g_end; ++g) {
          const HeadOperands<Scalar>& kv = heads[g * heads_per_kv];
          const RowsAhead<Scalar> ahead =
              j0 + n < cols ? RowsAhead<Scalar>{kv.v + (col0 + j0 + n) * kv.ldv, kv.ldv, d_v,
                                                std::min(step, cols - j0 - n)}
                            : RowsAhead<Scalar>{};
          decode_values(scores(g) + j0, chunk, rows_padded, kv.v + (col0 + j0) * kv.ldv, kv.ldv, n,
                        d_v, partial_o + part(g) * d_v_padded, d_v_padded, ahead);
        }
      }
      // Each part is normalised, o_c / l_c (PartialAttention's output): a convex combination of
      // the chunk's values, so the merge below cannot overflow where the result does not (the
      // unnormalised o_c reaches decode_chunk max|v|, and their merged sum S max|v|). A
      // non-finite o_c is recomputed, normalised, skipping zero weights: a weight of exactly 0
      // must add nothing even against a NaN or inf value (0 * NaN = NaN), and finite values
      // whose o_c overflowed give their finite result. (V is not scanned beforehand, which would
      // read it a second time.)
      for (Index g = g_begin; g < g_end; ++g) {
        const HeadOperands<Scalar>& kv = heads[g * heads_per_kv];
        const Scalar* const vt = kv.v + col0 * kv.ldv;
        for (Index r = 0; r < rows; ++r) {
          const Scalar lc = partial_l[part(g) + r];
          if (lc == Scalar(0)) continue;  // no visible key: o_c is 0
          Row o_row(partial_o + (part(g) + r) * d_v_padded, d_v);
          if (o_row.allFinite()) {
            o_row /= lc;
            continue;
          }
          const Scalar* p = scores(g) + r * chunk;
          o_row.setZero();
          for (Index j = 0; j < cols; ++j) {
            if (p[j] != Scalar(0)) o_row += (p[j] / lc) * ConstRow(vt + j * kv.ldv, d_v);
          }
        }
      }
    }

    // Merge the chunks of each row in chunk order (the formula at the top of this section).
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
    for (Index row = 0; row < num_heads * num_queries; ++row) {
      const Index head = row / num_queries, query = row % num_queries;
      const Index g = head / heads_per_kv;
      const Index r = (head % heads_per_kv) * num_queries + query;  // stacked row in the group
      const HeadOperands<Scalar>& h = heads[head];
      Row out(h.out + query * h.ldo, d_v);
      Scalar mx = minus_inf;
      for (Index c = 0; c < num_chunks; ++c) {
        mx = max_propagate_nan(mx, partial_m[(g * num_chunks + c) * rows_padded + r]);
      }
      out.setZero();
      if (mx == minus_inf) {
        if (h.lse != nullptr) h.lse[query] = minus_inf;
        continue;
      }
      // The parts' weights exp(m_c - M) l_c, normalised by their sum, times the normalised
      // parts: out is a convex combination of them.
      Scalar sum(0);
      for (Index c = 0; c < num_chunks; ++c) {
        const Index at = (g * num_chunks + c) * rows_padded + r;
        const Scalar lc = partial_l[at];
        if (lc == Scalar(0)) continue;  // the row sees no key of this chunk
        sum += std::exp(partial_m[at] - mx) * lc;
      }
      for (Index c = 0; c < num_chunks; ++c) {
        const Index at = (g * num_chunks + c) * rows_padded + r;
        const Scalar lc = partial_l[at];
        if (lc == Scalar(0)) continue;
        const Scalar weight = std::exp(partial_m[at] - mx) * lc;
        // A weight of exactly 0 (an underflow) adds nothing, as merge() and one call's zero
        // weights: not 0 * NaN.
        if (weight == Scalar(0)) continue;
        out += (weight / sum) * ConstRow(partial_o + at * d_v_padded, d_v);
      }
      if (h.lse != nullptr) h.lse[query] = mx + std::log(sum);
    }
  }
}

/// Attention for `num_heads` heads that share sizes and mask: every head has num_queries queries,
/// num_keys keys, widths d_k and d_v. Shapes were checked by the caller; outputs must not alias
/// inputs. All heads run in one parallel region, over (head, query tile) pairs; calls of a few
/// queries against many keys (use_decode_path) take the split-key decode path instead.
/// Grouped-query attention: heads_per_kv consecutive query heads share one key/value head, i.e.
/// heads [g * heads_per_kv, (g + 1) * heads_per_kv) have the same k, ldk, v and ldv (the caller
/// points them at the same columns; nothing is copied per query head). K (and V, when it is packed)
/// is then packed once per KV head, from the group's first head. heads_per_kv must divide
/// num_heads.
template <typename Scalar, typename Mask>
void multi_head_attention(const HeadOperands<Scalar>* heads, Index num_heads, Index num_queries,
                          Index num_keys, Index d, Index d_v, Scalar scale, const Mask& mask,
                          CallWorkspace<Scalar>& workspace, Index heads_per_kv = 1,
                          Scalar softcap = Scalar(0)) {
  if (use_decode_path(num_queries, num_keys)) {
    decode_attention(heads, num_heads, num_queries, num_keys, d, d_v, scale, mask, workspace,
                     heads_per_kv, softcap);
    return;
  }
  using G = Geometry<Scalar>;
  eigen_assert(heads_per_kv >= 1 && num_heads % heads_per_kv == 0);
  const Index num_kv_heads = num_heads / heads_per_kv;
  const Index num_key_blocks = (num_keys + G::block_cols - 1) / G::block_cols;
  const Index num_query_blocks = (num_queries + G::block_rows - 1) / G::block_rows;
  const Index d_v_padded = round_up(d_v, G::width);
  // V is read in place only when its rows are contiguous whole vectors. Rows further apart (the
  // column views of MultiHeadAttention: d_model apart, 4 KiB for d_model 1024) map a key block's
  // rows onto a few cache sets, which evicts them before the next query row reuses them; packing
  // costs one pass over S x d_v against L x S x d_v for the product.
  // One pass over V (S x d_v, against L x S x d_v for the product) finds max |v|: whether some
  // value is NaN or inf (then the slower p v that skips zero weights runs), and whether the
  // unnormalised accumulator o, up to S max|v|, could overflow although out = o / l is finite.
  // Then V is packed scaled by a power of two, exactly, and the output scaled back.
  Scalar value_max(0);
  for (Index g = 0; g < num_kv_heads; ++g) {
    const HeadOperands<Scalar>& h = heads[g * heads_per_kv];
    value_max = max_propagate_nan(value_max, max_abs(h.v, h.ldv, num_keys, d_v));
  }
  const bool values_finite = std::isfinite(value_max);
  if (!values_finite) {
    value_max = Scalar(0);
    for (Index g = 0; g < num_kv_heads; ++g) {
      const HeadOperands<Scalar>& h = heads[g * heads_per_kv];
      value_max = std::max(value_max, max_abs_finite(h.v, h.ldv, num_keys, d_v));
    }
  }
  const Scalar value_scale = overflow_rescale(value_max, Scalar(1), num_keys);
  const bool pack_values = d_v_padded != d_v || heads[0].ldv != d_v || value_scale != Scalar(1);
  const Index k_panel_size = num_key_blocks * d * G::block_cols;
  const Index v_panel_size = pack_values ? num_keys * d_v_padded : 0;
  const int threads = thread_count(num_heads * std::max(num_query_blocks, num_key_blocks));
  // The KV heads are taken a few at a time: their K (and V) are packed, then their query tiles
  // run, and only then the next few are packed. Packing every head up front and then running the
  // tiles would stream each head's packed panels back from memory (16 heads of 2048 keys at
  // d = 64 are 16 MiB, against a 1 MiB L2), and taking tiles across heads would swap the cached
  // K/V on every tile; a step of one KV head keeps its 0.5 + 0.5 MiB in L2 while its query tiles
  // reuse them (MHA 1024/16, N = 2048: the attention part ran 15 % slower than one head at a time
  // before). A step spans enough heads to give every thread about four tiles, so few query tiles
  // per head (short sequences) still keep the threads busy between the steps' barriers.
  const Index tiles_per_kv_head = heads_per_kv * num_query_blocks;
  const Index wanted_tiles = Index{4} * threads;
  const Index kv_heads_per_step = std::min(
      num_kv_heads, std::max<Index>(1, (wanted_tiles + tiles_per_kv_head - 1) / tiles_per_kv_head));

  // K is packed once per KV head (not once per query tile, nor once per query head of a group); V
  // too when its rows are not a whole number of vectors (the micro-kernel reads whole vectors past
  // d_v) or not contiguous (see pack_values).
  workspace.reserve(kv_heads_per_step * k_panel_size, kv_heads_per_step * v_panel_size, threads, d,
                    d_v_padded);
  Scalar* const k_packed = workspace.k_packed.data();
  Scalar* const v_packed = workspace.v_packed.data();
  // The mask bound to this call's L and S once (mask.hpp); every tile asks the bound form.
  const auto& bound_mask = detail::bind_mask(mask, num_queries, num_keys);
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads) if (threads > 1)
#endif
  {
#if defined(_OPENMP)
    ThreadWorkspace<Scalar>& ws =
        workspace.per_thread[static_cast<std::size_t>(omp_get_thread_num())];
#else
    ThreadWorkspace<Scalar>& ws = workspace.per_thread[0];
#endif
    // Every thread walks the same steps; the work-sharing loops inside end in barriers, so a
    // step's panels are complete before its tiles start and in use until they end.
    for (Index first_kv = 0; first_kv < num_kv_heads; first_kv += kv_heads_per_step) {
      const Index step_kv_heads = std::min(kv_heads_per_step, num_kv_heads - first_kv);
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
      for (Index job = 0; job < step_kv_heads * num_key_blocks; ++job) {
        const Index slot = job / num_key_blocks, kb = job % num_key_blocks;
        const HeadOperands<Scalar>& h = heads[(first_kv + slot) * heads_per_kv];
        pack_key_block(h.k, h.ldk, num_keys, d, kb,
                       k_packed + slot * k_panel_size + kb * d * G::block_cols);
      }
      if (pack_values) {
#if defined(_OPENMP)
#pragma omp for schedule(static)
#endif
        for (Index job = 0; job < step_kv_heads * num_keys; ++job) {
          const Index slot = job / num_keys, j = job % num_keys;
          const HeadOperands<Scalar>& h = heads[(first_kv + slot) * heads_per_kv];
          Scalar* dst = v_packed + slot * v_panel_size + j * d_v_padded;
          if (value_scale == Scalar(1)) {
            std::memcpy(dst, h.v + j * h.ldv, sizeof(Scalar) * d_v);
          } else {
            Eigen::Map<Eigen::Array<Scalar, 1, Eigen::Dynamic>>(dst, d_v) =
                Eigen::Map<const Eigen::Array<Scalar, 1, Eigen::Dynamic>>(h.v + j * h.ldv, d_v) *
                value_scale;
          }
          std::fill(dst + d_v, dst + d_v_padded, Scalar(0));
        }
      }
      // Tiles are handed out one at a time, head by head, each head's last (under a causal mask,
      // most expensive) first; which thread computes a tile does not change its result.
#if defined(_OPENMP)
#pragma omp for schedule(dynamic, 1)
#endif
      for (Index t = 0; t < step_kv_heads * tiles_per_kv_head; ++t) {
        const Index head = first_kv * heads_per_kv + t / num_query_blocks;
        const Index row0 = (num_query_blocks - 1 - t % num_query_blocks) * G::block_rows;
        const HeadOperands<Scalar>& h = heads[head];
        const Index slot = head / heads_per_kv - first_kv;
        const Problem<Scalar> pb{h.q,
                                 h.ldq,
                                 num_queries,
                                 num_keys,
                                 d,
                                 d_v,
                                 k_packed + slot * k_panel_size,
                                 pack_values ? v_packed + slot * v_panel_size : h.v,
                                 pack_values ? d_v_padded : h.ldv,
                                 d_v_padded,
                                 scale,
                                 h.out,
                                 h.ldo,
                                 h.lse,
                                 values_finite,
                                 softcap,
                                 Scalar(1) / value_scale};
        process_query_tile(pb, bound_mask, row0, std::min(G::block_rows, num_queries - row0), ws);
      }
    }
  }
}

/// Single-head attention: out = softmax(scale q k^T + mask) v, and lse (if not null) per row; with
/// softcap > 0 the scaled scores s become softcap * tanh(s / softcap) before the mask.
template <typename Scalar, typename Mask>
void attention(ConstMatrixRef<Scalar> q, ConstMatrixRef<Scalar> k, ConstMatrixRef<Scalar> v,
               MatrixRef<Scalar> out, Scalar* lse, const Mask& mask, Scalar scale,
               CallWorkspace<Scalar>& workspace, Scalar softcap = Scalar(0)) {
  const HeadOperands<Scalar> head{q.data(),        q.outerStride(),   k.data(),
                                  k.outerStride(), v.data(),          v.outerStride(),
                                  out.data(),      out.outerStride(), lse};
  multi_head_attention(&head, 1, q.rows(), k.rows(), q.cols(), v.cols(), scale, mask, workspace, 1,
                       softcap);
}

}  // namespace detail::flash

/// Scratch memory for the tiled kernel that the caller owns and reuses, so that repeated calls
/// allocate nothing: pass it to scaled_dot_product_attention(q, k, v, out, workspace, mask,
/// options). Its buffers grow to the largest call seen (about (S + 2 * 64 * threads) * (d_k + d_v)
/// scalars) and are kept. Not thread-safe: one workspace per concurrent caller.
template <typename Scalar>
class AttentionWorkspace {
 public:
  AttentionWorkspace() = default;

  /// The kernel's buffers (internal: their layout may change between versions).
  [[nodiscard]] detail::flash::CallWorkspace<Scalar>& buffers() { return call_; }

 private:
  detail::flash::CallWorkspace<Scalar> call_;
};

}  // namespace attention

#undef ATTENTION_UNROLL

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
