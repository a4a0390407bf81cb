#pragma once
// SPDX-License-Identifier: MIT
//
// A low-precision cache's rows as attention reads them (KVCache<Eigen::bfloat16>,
// KVCache<Eigen::half>, Int8KVCache), shared by the layer's step through a cache
// (multi_head_plan.hpp) and by attention over a cache (cache_attention.hpp), so that both take
// the same path:
//   - a call of at most decode_max_queries queries reads the stored rows in place: the decode
//     kernels widen them in registers (kernels/decode_kernels.hpp), int8 in groups that
//     int8_rows_in_place accepts;
//   - a longer call (a prompt), or int8 in other groups, widens the cache to float scratch once
//     and takes the float path: there the products are O(L S d) against the O(S d) widening.

#include <Eigen/Core>
#include <cstdint>

#include "attention/int8_kv_cache.hpp"
#include "attention/kernels/decode_kernels.hpp"
#include "attention/kernels/scheduling.hpp"
#include "attention/kv_cache.hpp"
#include "attention/types.hpp"

namespace attention::detail {

/// The stored type of a low-precision cache (Eigen::bfloat16, Eigen::half, std::int8_t); no
/// `type` for any other argument.
template <typename Cache>
struct LowPrecisionCache {};
template <>
struct LowPrecisionCache<KVCache<Eigen::bfloat16>> {
  using type = Eigen::bfloat16;
};
template <>
struct LowPrecisionCache<KVCache<Eigen::half>> {
  using type = Eigen::half;
};
template <>
struct LowPrecisionCache<Int8KVCache> {
  using type = std::int8_t;
};
template <typename Cache>
using low_precision_cache_t = typename LowPrecisionCache<Cache>::type;

/// The whole rows of a low-precision cache as the decode kernels read them (column 0).
template <typename Element>
kernels::StoredKV<Element> stored_rows(const KVCache<Element>& cache) {
  return {{cache.keys().data(), cache.keys().outerStride()},
          {cache.values().data(), cache.values().outerStride()}};
}
inline kernels::StoredKV<std::int8_t> stored_rows(const Int8KVCache& cache) {
  const auto k = cache.quantized_keys(), v = cache.quantized_values();
  const auto ks = cache.key_scales(), vs = cache.value_scales();
  return {{k.data(), k.outerStride(), {ks.data(), ks.outerStride(), cache.group_size(), 0}},
          {v.data(), v.outerStride(), {vs.data(), vs.outerStride(), cache.group_size(), 0}}};
}

/// The cache's keys and values widened to float into k and v (size() x width() each).
template <typename Element>
void widen_rows(const KVCache<Element>& cache, Eigen::Map<Matrix<float>>& k,
                Eigen::Map<Matrix<float>>& v) {
  k = cache.keys().template cast<float>();
  v = cache.values().template cast<float>();
}
inline void widen_rows(const Int8KVCache& cache, Eigen::Map<Matrix<float>>& k,
                       Eigen::Map<Matrix<float>>& v) {
  cache.dequantized_keys(k);
  cache.dequantized_values(v);
}

/// True if the decode kernels read the cache's rows in place for heads of head_dim columns.
template <typename Element>
bool reads_in_place(const KVCache<Element>&, Index) {
  return true;
}
inline bool reads_in_place(const Int8KVCache& cache, Index head_dim) {
  return kernels::int8_rows_in_place(head_dim, cache.group_size());
}

/// True if `num_queries` queries with heads of head_dim columns attend over the cache's stored
/// rows in place (the top of this file); false if the cache is widened to float first.
template <typename Cache>
bool attends_in_place(const Cache& cache, Index num_queries, Index head_dim) {
  return num_queries <= kernels::decode_max_queries && reads_in_place(cache, head_dim);
}

}  // namespace attention::detail
