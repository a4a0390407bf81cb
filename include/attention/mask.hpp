#pragma once
// SPDX-License-Identifier: MIT
//
// Masks say which keys each query may attend to. They are types, not bare matrices or bools, so a
// call reads unambiguously and a mask cannot be mistaken for an output argument:
//
//   scaled_dot_product_attention(q, k, v)                       every key visible
//   scaled_dot_product_attention(q, k, v, attention::causal)    key j visible to query i iff j <= i
//   scaled_dot_product_attention(q, k, v, attention::causal_lower_right)
//                                                               ... iff j <= i + (S - L)
//   scaled_dot_product_attention(q, k, v, attention::window(left, right))
//                                       ... iff i + (S - L) - left <= j <= i + (S - L) + right
//   scaled_dot_product_attention(q, k, v, attention::key_padding(n))  ... iff j < n
//   scaled_dot_product_attention(q, k, v, attention::keep(b))   b(i, j) == true: query i sees key j
//   scaled_dot_product_attention(q, k, v, attention::bias(m))   m(i, j) added to the scaled score
//   scaled_dot_product_attention(q, k, v, mask_a & mask_b)      visible only where both masks
//                                                               are; biases add
//   scaled_dot_product_attention(q, k, v, attention::alibi(m))  -m * ((i + S - L) - j) added to
//                                                               the scaled score (ALiBi, alibi.hpp)
//   scaled_dot_product_attention(q, k, v, attention::sequences(offsets).causal())
//                                                               packed sequences, causal within
//                                                               each
//
// L is the number of queries (q.rows()) and S the number of keys (k.rows()).
//
// The two causal alignments. attention::causal is top-left aligned (PyTorch's is_causal): query i
// sees keys j <= i, whatever L and S. attention::causal_lower_right is aligned at the bottom-right
// corner: query i sees keys j <= i + (S - L), so the last query sees every key. This is what an
// incremental decoder needs: its L new queries are the last L of S positions, the first S - L keys
// being the cached past. The two agree when L == S.
//
//   L = 2, S = 5       key 0 1 2 3 4          L = 5, S = 2       key 0 1
//   causal     query 0     x . . . .          causal     query 0     x .
//              query 1     x x . . .                     query 1     x x
//                                                        query 2     x x
//   causal_lower_right                                   query 3     x x
//              query 0     x x x x .                     query 4     x x
//              query 1     x x x x x          causal_lower_right
//                                                        query 0     . .   <- no key: output 0
//   x visible, . masked: weight exactly 0                query 1     . .
//                                                        query 2     . .
//                                                        query 3     x .
//                                                        query 4     x x
//
// Sliding windows, attention::window(left, right), are lower-right aligned as sliding-window
// models (Mistral, Longformer's local attention; Beltagy et al., 2020) use them: query i sees the
// keys from left positions before its own, i + (S - L), to right positions after it. window(w, 0)
// is causal sliding-window attention over the last w + 1 keys; window(attention::unbounded, 0) is
// causal_lower_right, and attention::unbounded leaves either side open. Sizes must be >= 0.
//
//   window(2, 0), L = S = 5   key 0 1 2 3 4
//              query 0            x . . . .
//              query 1            x x . . .
//              query 2            x x x . .
//              query 3            . x x x .
//              query 4            . . x x x
//
// A query row with no visible key (every entry of its keep row false, or every bias -inf) gets all
// weights 0 and output 0, never NaN. A masked weight is exactly 0.0.
//
// Where each lives (this header includes them all):
//   masks/protocol.hpp     the mask protocol (TileVisibility, is_mask_v, bind_mask) and NoMask:
//                          what a mask of your own must offer, with a complete example
//   masks/positional.hpp   causal, causal_lower_right, window(), key_padding()
//   masks/matrix.hpp       keep(), bias()
//   masks/sequences.hpp    sequences(): packed variable-length batches
//   masks/combination.hpp  a & b
// A mask of your own needs no registration: a type with the protocol's members is accepted by
// every function that takes a mask, and combines with the others by `&`.

#include "attention/masks/combination.hpp"
#include "attention/masks/matrix.hpp"
#include "attention/masks/positional.hpp"
#include "attention/masks/protocol.hpp"
#include "attention/masks/sequences.hpp"
