#pragma once
// SPDX-License-Identifier: MIT
//
// One unit of the tiled backward (backward.hpp): a key span against every query block, depending on
// the instruction set (the products run on micro_kernels.hpp). From q, k and the forward's saved
// log-sum-exp it recomputes one block_rows x span tile of weights at a time through the score
// pipeline (score_pipeline.hpp) and turns it into gradients (FlashAttention-2 backward, Dao 2023,
// Alg. 2):
//
//   s  = q'_i k_j^T, then ScoreRules::apply: scaled, capped, masked        (Alg. 2, line 11)
//   p  = exp(s - lse_i)                       exactly the forward's weights (line 13)
//   dv_j += pᵀ do_i                                                          (line 16)
//   dp = do_i v_jᵀ                                                           (line 17)
//   ds = p ∘ (dp − delta_i),   delta_i = rowsum(do_i ∘ o_i) = rowsum(dp ∘ p)  (lines 4, 19)
//   dq_i += scale · ds k_j,   dk_j += scale · dsᵀ q_i                      (lines 20-21)
//        (soft-capped: ds ∘ (1 − tanh²) in place of ds there; dbias stays ds)
//
// Blocking (BackwardGeometry, derived for Zen 5: two full-width FMA pipes of latency 4, 32 zmm
// registers, 48 KiB L1d, 1 MiB L2). Each of the five products is made of micro-tiles of mr = 8
// rows x 2 vectors (32 floats): 16 accumulators, twice the 4 x 2 = 8 in flight that keep both
// pipes busy, 16 + 2 loaded vectors + 1 broadcast = 19 of the 32 registers, and per step 2 vector
// loads and 8 broadcasts for 16 FMAs (8 cycles). A query block is 8 row groups (64 rows), a key
// block 64 keys, a span 8 key blocks (512 keys) once there are 64 key blocks (scheduling.hpp).
// What each product re-reads from L1 (d = 128, floats; the L1 is 64 sets of 12 lines):
//   q k_jᵀ, do v_jᵀ  a panel column (d x 32 keys, 16 KiB) for all 8 row groups of the query block,
//                    beside the block's q or do (64 x d, 32 KiB: 8 lines in every set). Each
//                    column is packed contiguous (pack_panel_columns: 4 lines a set, 12 in all);
//                    as rows of a 64-key panel, 256 bytes apart, it took 8 lines in half the sets;
//   pᵀ do, dsᵀ q     the query block's do or q (64 x d, 32 KiB) for every 8 keys of dv or dk; the
//                    tile is read transposed, one entry of each of its 64 rows per step, so its
//                    row stride is an odd number of cache lines (tile_stride);
//   ds k_j           128 keys of one 32-column chunk of k (16 KiB, pack_span_keys) for all 8 row
//                    groups, piece by piece of the span.
// A span's own data (k and v panels, packed k, dk and dv accumulators: 5 x 256 KiB, and the p and
// ds tiles, 2 x 132 KiB) is 1.5 MiB, more than L2, so it comes from L3 once per query block:
// 1.5 MiB per 64 x 512 x 5 x 128 multiply-adds (655k cycles at 32 a cycle), 2.4 bytes a cycle.
// Spans of 4 blocks (768 KiB, inside L2) measured slower at N = 4096, d = 128: each query block's
// partial dq is then read and written twice as often. Query blocks of 128 rows (16 row groups)
// halve the L3 traffic and the dk, dv micro-tiles' stores, but were no faster at d = 128 either:
// the block's q and do (64 KiB each) no longer stay in L1 beside a panel column.
// The partial dq rows of a query block are never cleared: the first piece of keys that reaches
// them assigns them (accumulate_product's Assign), so each group's partial is written once where
// clearing it first wrote it twice (at N = 4096, d = 128: 8 groups x 2 MiB).

#include <algorithm>
#include <cstring>
#include <limits>

#include "attention/kernels/micro_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kernels/score_pipeline.hpp"
#include "attention/kernels/workspace.hpp"
#include "attention/mask.hpp"
#include "attention/types.hpp"

#define ATTENTION_KERNEL_BODY "attention/kernels/backward_tiles.inc"
#include "attention/kernels/for_each_isa.inc"
