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
