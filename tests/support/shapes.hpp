#pragma once
// SPDX-License-Identifier: MIT
//
// Problem shapes (queries L, keys S, key width d_k, value width d_v) for the tests of a feature
// through every kernel path: around the forward's tiles (48 or 64 queries, 24 to 96 keys), one
// query, L < S and L > S; the last two take the split-key decode path (at most 16 queries, at least
// 512 keys).

#include <Eigen/Core>

namespace support {

struct Shape {
  Eigen::Index queries, keys, d_k, d_v;
};

inline constexpr Shape tile_straddling_shapes[] = {
    {1, 1, 4, 3},      {5, 9, 8, 8},   {37, 70, 24, 16}, {65, 3, 16, 5},
    {70, 130, 32, 17}, {1, 520, 8, 4}, {3, 600, 16, 9}};

}  // namespace support
