#pragma once
// SPDX-License-Identifier: MIT
//
// Attention of new queries over a KV cache, the heads packed side by side as in heads.hpp: the
// step of a decoder that keeps its own projections and calls attention on the cache directly.
//
//   attention::Int8KVCache cache(8 * 128, 32768, 128);   // 8 K/V heads of 128, groups of a head
//   cache.append(k_new, v_new);                           // the new token's keys and values
//   attention::scaled_dot_product_attention(q_new, cache, attention::Heads{32, 8}, out, workspace);
//
// The L = q.rows() queries are the newest L tokens of the cache (appended before the call), at
// positions S - L .. S - 1 of the S = cache.size() cached tokens: with the default mask,
// attention::causal_lower_right, query i sees the cached tokens 0 .. S - L + i, which is what
// MultiHeadAttention::forward(x_new, cache) computes after its append. Another mask (L x S) may be
// given instead: attention::window(w, 0) for a sliding window, attention::no_mask to let every
// query see every cached token.
//
// Every cache kind is read as it is stored:
//   KVCache<float>, KVCache<double>   q, out and the arithmetic in the cache's type; the cache's
//                                     rows are read in place (as keys() and values() in heads.hpp)
//   KVCache<Eigen::bfloat16>,         q and out float, the arithmetic float (low_precision.hpp).
//   KVCache<Eigen::half>,             A call of at most 16 queries (kernels::decode_max_queries)
//   Int8KVCache                       reads the stored rows in place, widened in registers: 2 bytes
//                                     per entry (about 1 for int8) instead of float's 4, so a
//                                     memory-bound step runs up to 2 (4) times as fast. Int8 rows
//                                     are read in place when a head lies in one group (group_size
//                                     a multiple of head_dim: one scale per key and head, applied
//                                     to the dot product and to the softmax weight) or when the
//                                     groups are a multiple of 16 that divides head_dim. A longer
//                                     call (a prompt), or int8 in other groups, widens the cache
//                                     into the workspace's float buffers once (S x width floats
//                                     each for keys and values) and takes the float path.
// The result is the float attention of the stored keys and values (bfloat16 and half exactly as
// widened, int8 as q s), within float's bound; bitwise the same for any number of threads. An
// int8 step read in place with one scale per key and head computes its scores as integer dot
// products: each query row rounded to 16-bit integers (scale max |q| / 32767), summed exactly
// against the int8 keys, then times both scales (kernels/decode_kernels.hpp, "Integer scores").
// That rounding moves a query entry by at most about max |q| / 65534, 258 times less than the
// int8 keys' own rounding (max |k| / 254), and the scores are the same on every instruction set.

#include <Eigen/Core>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "attention/detail/aliasing.hpp"
#include "attention/detail/cache_rows.hpp"
#include "attention/errors.hpp"
#include "attention/heads.hpp"
#include "attention/int8_kv_cache.hpp"
#include "attention/kernels/decode.hpp"
#include "attention/kv_cache.hpp"
#include "attention/low_precision.hpp"
#include "attention/mask.hpp"
#include "attention/options.hpp"
#include "attention/scaled_dot_product.hpp"
#include "attention/types.hpp"
#include "attention/workspace.hpp"

namespace attention {
namespace detail {

/// The scalar type of q and out for attention over a cache: the cache's own for KVCache<float>
/// and KVCache<double>, float for the low-precision caches; no `type` for anything else.
template <typename Cache>
struct CacheQuery {};
template <>
struct CacheQuery<KVCache<float>> {
  using type = float;
};
template <>
struct CacheQuery<KVCache<double>> {
  using type = double;
};
template <>
struct CacheQuery<KVCache<Eigen::bfloat16>> {
  using type = float;
};
template <>
struct CacheQuery<KVCache<Eigen::half>> {
  using type = float;
};
template <>
struct CacheQuery<Int8KVCache> {
  using type = float;
};

/// True for the caches attention reads (CacheQuery has a type).
template <typename Cache, typename = void>
inline constexpr bool is_attention_cache_v = false;
template <typename Cache>
inline constexpr bool is_attention_cache_v<Cache, std::void_t<typename CacheQuery<Cache>::type>> =
    true;

/// The body of attention over a cache (top of this header), after the scalar types are checked.
template <typename Scalar, typename Cache, typename Mask>
void cache_attention_in(const ConstMatrixRef<Scalar>& q, const Cache& cache, const Heads& heads,
                        MatrixRef<Scalar> out, AttentionWorkspace<Scalar>& workspace,
                        const Mask& mask_arg, const Options& options) {
  const auto& mask = checked_mask<Scalar>(mask_arg);  // static_asserts the mask protocol
  constexpr const char* func = "scaled_dot_product_attention (cache)";
  const Index head_dim = checked_head_dim(func, heads, q.cols());
  require_equal(func, "cache.width()", cache.width(), "heads.num_kv_heads * head_dim",
                heads.num_kv_heads * head_dim);
  require_positive(func, "q.rows() (number of queries)", q.rows());
  require_positive(func, "cache.size() (number of cached tokens)", cache.size());
  require_equal(func, "out.rows()", out.rows(), "q.rows()", q.rows());
  require_equal(func, "out.cols()", out.cols(), "q.cols()", q.cols());
  mask.check(func, q.rows(), cache.size());
  if constexpr (std::is_same_v<Cache, KVCache<Scalar>>) {
    packed_heads_in<Scalar>(q, cache.keys(), cache.values(), out, heads, mask, options,
                            &workspace.buffers());
  } else {
    static_assert(std::is_same_v<Scalar, float>);
    const Index num_queries = q.rows(), num_keys = cache.size();
    if (!attends_in_place(cache, num_queries, head_dim)) {
      LowPrecisionStaging& staging = workspace.staging();
      Eigen::Map<Matrix<float>> k = staged(staging.k, num_keys, cache.width());
      Eigen::Map<Matrix<float>> v = staged(staging.v, num_keys, cache.width());
      widen_rows(cache, k, v);
      packed_heads_in<float>(q, k, v, out, heads, mask, options, &workspace.buffers());
      return;
    }
    if (may_overlap(out, q)) {
      Matrix<float> result(out.rows(), out.cols());
      cache_attention_in<float>(q, cache, heads, result, workspace, mask, options);
      out = result;
      return;
    }
    kernels::CallWorkspace<float>& buffers = workspace.buffers();
    std::vector<kernels::HeadOperands<float>>& operands = buffers.heads;
    operands.clear();
    for (Index h = 0; h < heads.num_heads; ++h) {
      const Index c = h * head_dim;
      operands.push_back({q.data() + c, q.outerStride(), nullptr, 0, nullptr, 0, out.data() + c,
                          out.outerStride(), nullptr});
    }
    kernels::decode_attention(operands.data(), heads.num_heads, num_queries, num_keys, head_dim,
                              head_dim, resolve_rules<float>(func, options, head_dim), mask,
                              buffers, stored_rows(cache), heads.num_heads / heads.num_kv_heads);
  }
}

}  // namespace detail

/// Attention of the L = q.rows() newest tokens' queries over everything in `cache` (top of this
/// header), heads.num_heads query heads packed side by side in q's columns reading
/// heads.num_kv_heads K/V heads packed in the cache's rows (grouped-query attention, heads.hpp):
///   out_h = softmax(scale * q_h k_g^T + mask) v_g,   g = h / (num_heads / num_kv_heads),
///   scale = 1 / sqrt(head_dim) unless options.scale is set,
/// with k and v the cache's S = cache.size() rows as stored (widened to float), q: L x (num_heads
/// * head_dim), out: the same shape. The mask (L x S) applies to every head; by default query i
/// sees the cached tokens up to its own position S - L + i (attention::causal_lower_right).
/// `cache` is a KVCache<float> (q float), KVCache<double> (q double), KVCache<Eigen::bfloat16>,
/// KVCache<Eigen::half> or Int8KVCache (q float). Once `workspace` has served a call of these
/// sizes, further calls of the same kind allocate nothing on the heap. `out` may share memory with
/// q (it is then computed into a temporary).
/// \throws ShapeError unless num_heads >= 1, num_kv_heads divides num_heads, num_heads divides
/// q.cols(), cache.width() = num_kv_heads * head_dim, L >= 1, the cache holds at least one token,
/// out is L x q.cols(), and the mask is L x S (messages name the numbers); std::invalid_argument
/// for a non-finite scale or a softcap that is not positive and finite.
template <typename DerivedQ, typename Cache, typename Mask = CausalLowerRightMask,
          std::enable_if_t<detail::is_attention_cache_v<Cache> && detail::is_mask_argument_v<Mask>,
                           int> = 0>
void scaled_dot_product_attention(const Eigen::MatrixBase<DerivedQ>& q, const Cache& cache,
                                  const Heads& heads, MatrixRef<typename DerivedQ::Scalar> out,
                                  AttentionWorkspace<typename DerivedQ::Scalar>& workspace,
                                  const Mask& mask = {}, const Options& options = {}) {
  using Scalar = typename detail::CacheQuery<Cache>::type;
  static_assert(std::is_same_v<typename DerivedQ::Scalar, Scalar>,
                "attention::scaled_dot_product_attention (cache): q must be float for a "
                "KVCache<float>, KVCache<Eigen::bfloat16>, KVCache<Eigen::half> or Int8KVCache, "
                "double for a KVCache<double> (convert it with .cast<T>())");
  if constexpr (std::is_same_v<typename DerivedQ::Scalar, Scalar>) {
    detail::cache_attention_in<Scalar>(q, cache, heads, out, workspace, mask, options);
  }
}

/// Attention over a cache returned as a new L x q.cols() row-major matrix; see the overload above.
template <typename DerivedQ, typename Cache, typename Mask = CausalLowerRightMask,
          std::enable_if_t<detail::is_attention_cache_v<Cache> && detail::is_mask_argument_v<Mask>,
                           int> = 0>
[[nodiscard]] Matrix<typename DerivedQ::Scalar> scaled_dot_product_attention(
    const Eigen::MatrixBase<DerivedQ>& q, const Cache& cache, const Heads& heads,
    const Mask& mask = {}, const Options& options = {}) {
  Matrix<typename DerivedQ::Scalar> out(q.rows(), q.cols());
  AttentionWorkspace<typename DerivedQ::Scalar> workspace;
  scaled_dot_product_attention(q, cache, heads, out, workspace, mask, options);
  return out;
}

}  // namespace attention
