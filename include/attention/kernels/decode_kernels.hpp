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

#define ATTENTION_KERNEL_BODY "attention/kernels/decode_kernels.inc"
#include "attention/kernels/for_each_isa.inc"
