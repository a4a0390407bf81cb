// SPDX-License-Identifier: MIT
//
// MultiHeadAttention<float>::forward(x_new, cache) through the low-precision caches
// (KVCache<Eigen::bfloat16>, KVCache<Eigen::half>, Int8KVCache): every call's output against the
// long-double reference computed from the same stored (rounded or quantised) keys and values, to
// a bound derived below from float's unit roundoff and the sizes -- with grouped-query heads, RoPE,
// ALiBi and soft-capping at once, prompts (widened to float first), single tokens and chunks (read
// in place), a sliding window with dropped tokens, and a cache long enough for several decode
// chunks; the same bits for 1 and 2 threads and for any buffer layout of the cache.
//
// The bound. The layer's projections are exact in float (weights k / 16 with |k| <= 2, inputs and
// biases multiples of 2^-8 in [-1, 1]: every product and partial sum is a multiple of 2^-12 below
// 2^4, which float holds; W_o is the identity and b_o zero), so the reference's Q, K and V before
// the cache's rounding are the layer's own, and the output is the heads' output. The stored keys
// and values are the reference's inputs. What remains is float attention's error, per output
// entry (u = 2^-24, gamma_n = n u / (1 - n u), query head h of head_dim d reading K/V head g, S
// cached tokens, q the rotated query):
//   e_q   = 6 u max_c |q_c|           RoPE: cos and sin rounded, two products and a sum per entry
//   delta = scale (gamma_d max_j |q| . |k_j| + e_q max_j sum_c |k_jc|) + u max_j |alibi_j| + 8 u
//   cap
//           a score's error: its dot product, q's error, the rounded bias, the soft-cap's tanh
//   |out_c - ref_c| <= (exp(2 delta) - 1 + (2 S + 16) u) max_j |v_jc|
// (the softmax argument of low_precision_test.cpp). It is 50 to 200 times the errors seen; a
// kernel that read a key or value off by one bfloat16 ulp (2^-8) would exceed it many times over.
// Over an Int8KVCache whose heads lie in one group, the decode path's scores are integer dot
// products of q rounded to 16 bits (kernels/decode_kernels.hpp, "Integer scores"): q' = scale q
// is rounded per row with s_q = max |q'| / 32767, each entry within s_q (1/2 + 2^-9) (its
// rounding, plus that of q' / s_q, at most 32767 u s_q); the computed max |q'| exceeds scale
// max |q| by at most the query's own error (6 u after RoPE) and the products scale q and
// max / 32767 (2 u), so e_q gains e_int8 = (1 + 16 u)(1/2 + 2^-9) / 32767 per unit of max |q|;
// the sum's conversion and the two scale products are 3 roundings, within gamma_d for d >= 3.
#include <gtest/gtest.h>

#include <algorithm>
#include <attention/attention.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/messages.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

namespace multi_head_low_precision_cache_test {
namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Int8KVCache;
using attention::KVCache;
using attention::MultiHeadAttention;
using Matrix = attention::Matrix<float>;
using Real = ref::Real;
using RealMatrix = ref::Matrix;

constexpr Real u = 0x1p-24L;
Real gamma(Index n) { return Real(n) * u / (1 - Real(n) * u); }
/// The error of q's 16-bit rounding per unit of max |q| (above), for int8 caches.
const Real e_int8 = (1 + 16 * u) * (0.5L + 0x1p-9L) / 32767;
/// e_int8 for an Int8KVCache, else 0.
template <typename Cache>
Real q_rounding_of() {
  return std::is_same_v<Cache, Int8KVCache> ? e_int8 : 0;
}

/// The stored keys and values of a cache, exactly, in long double.
template <typename Element>
RealMatrix stored_keys(const KVCache<Element>& cache) {
  return ref::to_real(cache.keys().template cast<float>());
}
template <typename Element>
RealMatrix stored_values(const KVCache<Element>& cache) {
  return ref::to_real(cache.values().template cast<float>());
}
RealMatrix dequantized(const Int8KVCache::QuantizedView& q, const Int8KVCache::ScaleView& s,
                       Index group) {
  RealMatrix x(q.rows(), q.cols());
  for (Index j = 0; j < q.rows(); ++j) {
    for (Index c = 0; c < q.cols(); ++c) x(j, c) = Real(q(j, c)) * Real(s(j, c / group));
  }
  return x;
}
RealMatrix stored_keys(const Int8KVCache& cache) {
  return dequantized(cache.quantized_keys(), cache.key_scales(), cache.group_size());
}
RealMatrix stored_values(const Int8KVCache& cache) {
  return dequantized(cache.quantized_values(), cache.value_scales(), cache.group_size());
}

/// The new tokens' output of `layer` over the stored rows k, v (S x kv_dim, the last L of them the
/// new tokens'), in long double, with the mask and the features of `features`, new token r at
/// absolute position `position` + r; and the bound above for each entry.
struct Expected {
  RealMatrix out, bound;
};

/// Sets o (L x d, a head's reference output over kg, vg) into expected's columns from `column`,
/// and the bound above beside it: e_q is the error of q's entries per unit of max |q| (6 u after
/// RoPE), `extra` the score error beyond the products (ALiBi's bias, the soft-cap).
void set_head(const RealMatrix& qh, const RealMatrix& kg, const RealMatrix& vg, const RealMatrix& o,
              Real scale, Real e_q, Real extra, Index column, Expected& expected) {
  const Index L = qh.rows(), S = kg.rows(), d = qh.cols();
  for (Index i = 0; i < L; ++i) {
    Real q_max = 0, qk_max = 0, k_sum_max = 0;
    for (Index c = 0; c < d; ++c) q_max = std::max(q_max, std::fabs(qh(i, c)));
    for (Index j = 0; j < S; ++j) {
      Real qk = 0, k_sum = 0;
      for (Index c = 0; c < d; ++c) {
        qk += std::fabs(qh(i, c) * kg(j, c));
        k_sum += std::fabs(kg(j, c));
      }
      qk_max = std::max(qk_max, qk);
      k_sum_max = std::max(k_sum_max, k_sum);
    }
    const Real delta = scale * (gamma(d) * qk_max + e_q * q_max * k_sum_max) + extra;
    for (Index c = 0; c < vg.cols(); ++c) {
      Real v_max = 0;
      for (Index j = 0; j < S; ++j) v_max = std::max(v_max, std::fabs(vg(j, c)));
      expected.out(i, column + c) = o(i, c);
      expected.bound(i, column + c) = (std::expm1(2 * delta) + Real(2 * S + 16) * u) * v_max;
    }
  }
}

Expected reference_step(const MultiHeadAttention<float>& layer,
                        const support::PositionFeatures& features, const Matrix& x_new,
                        Index position, const RealMatrix& k, const RealMatrix& v,
                        const ref::Mask& mask, Real q_rounding) {
  const ref::MultiHeadParameters p = support::parameters_of(layer);
  const Index L = x_new.rows(), S = k.rows(), d = layer.head_dim();
  const RealMatrix q = ref::project(ref::to_real(x_new), p.w_q, p.b_q);
  const ref::Positions positions = support::reference_positions(features, position, 0);
  const Real scale = 1 / std::sqrt(Real(d));
  const Real cap = features.softcap ? Real(*features.softcap) : 0;
  Expected heads{RealMatrix(L, layer.d_model()), RealMatrix(L, layer.d_model())};
  for (Index h = 0; h < layer.num_heads(); ++h) {
    const Index g = layer.kv_head_of(h);
    const RealMatrix qh = ref::head_block(q, h, d, positions, position);
    const RealMatrix kg = ref::columns(k, g * d, d), vg = ref::columns(v, g * d, d);
    const RealMatrix o = ref::attention(qh, kg, vg, ref::head_mask(mask, h, positions),
                                        std::nullopt, positions.softcap);
    const Real slope =
        features.alibi_slopes.empty() ? 0 : Real(features.alibi_slopes[std::size_t(h)]);
    set_head(qh, kg, vg, o, scale, 6 * u + q_rounding, u * slope * Real(S) + 8 * u * cap, h * d,
             heads);
  }
  return {ref::project(heads.out, p.w_o, p.b_o), heads.bound};
}

/// Entries of `out` beyond the bound of `expected` (printing the first few).
Index entries_outside(const Matrix& out, const Expected& expected) {
  Index outside = 0;
  for (Index i = 0; i < out.rows(); ++i) {
    for (Index c = 0; c < out.cols(); ++c) {
      const Real error = std::fabs(Real(out(i, c)) - expected.out(i, c));
      if (!(error <= expected.bound(i, c))) {
        if (++outside <= 3) {
          ADD_FAILURE() << "(" << i << ", " << c << "): " << out(i, c) << " vs "
                        << double(expected.out(i, c)) << ", error " << double(error) << " > bound "
                        << double(expected.bound(i, c));
        }
      }
    }
  }
  return outside;
}

/// A rows x cols matrix of k * unit, k uniform in [-levels, levels] (std::mt19937).
Matrix few_bits(Index rows, Index cols, unsigned seed, int levels, float unit) {
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> pick(-levels, levels);
  Matrix m(rows, cols);
  for (Index i = 0; i < rows; ++i) {
    for (Index j = 0; j < cols; ++j) m(i, j) = float(pick(random)) * unit;
  }
  return m;
}
Matrix inputs(Index rows, Index cols, unsigned seed) {
  return few_bits(rows, cols, seed, 256, 0x1p-8f);
}

/// 4 query heads reading 2 K/V heads of head_dim 16 (d_model 64), with exact projections (see the
/// top of this file) and the given position features.
MultiHeadAttention<float> layer_with_features(const support::PositionFeatures& features) {
  MultiHeadAttention<float> layer(64, 4, 2);
  layer.w_q = few_bits(64, 64, 90, 2, 0x1p-4f);
  layer.w_k = few_bits(64, 32, 91, 2, 0x1p-4f);
  layer.w_v = few_bits(64, 32, 92, 2, 0x1p-4f);
  layer.w_o = Matrix::Identity(64, 64);
  layer.b_q = inputs(1, 64, 93);
  layer.b_k = inputs(1, 32, 94);
  layer.b_v = inputs(1, 32, 95);
  layer.b_o.setZero();
  support::set_positions(layer, features);
  return layer;
}

const support::PositionFeatures everything = support::position_features_for_four_heads().back();

/// Feeds x (n tokens) through `cache` in calls of the given sizes (a prompt of more than 16
/// tokens takes the widened path, the rest are read in place), checking every call's output (of
/// at most 64 tokens) against the reference on the cache's stored rows; with `window`, the oldest
/// tokens are dropped to keep at most window + 1 and the mask is attention::window(window, 0).
template <typename Cache>
void expect_every_call_within_bound(const char* label, Cache cache, const std::vector<Index>& calls,
                                    std::optional<Index> window = {}) {
  SCOPED_TRACE(label);
  const MultiHeadAttention<float> layer = layer_with_features(everything);
  Index n = 0;
  for (const Index calls_n : calls) n += calls_n;
  const Matrix x = inputs(n, layer.d_model(), 96);
  Index t = 0;
  for (const Index count : calls) {
    SCOPED_TRACE(::testing::Message() << "tokens " << t << " .. " << t + count - 1);
    const Index position = cache.tokens_seen();
    Matrix out;
    ref::Mask mask = ref::Mask::causal_lower_right();
    if (window) {
      // New token r at p + r sees p + r - window .. p + r: the cached tokens before p - window
      // are seen by none of them.
      const Index excess = cache.size() - *window;
      if (excess > 0) cache.drop_oldest(excess);
      out = layer.forward(x.middleRows(t, count), cache, attention::window(*window, 0));
      mask = ref::Mask::window(*window, 0);
    } else {
      out = layer.forward(x.middleRows(t, count), cache);
    }
    t += count;
    if (count > 64) continue;  // a long prompt: its reference would cost more than the test
    const Expected expected =
        reference_step(layer, everything, x.middleRows(t - count, count), position,
                       stored_keys(cache), stored_values(cache), mask, q_rounding_of<Cache>());
    EXPECT_EQ(entries_outside(out, expected), 0);
  }
}

// A prompt of 20 tokens (widened to float first), 5 single tokens and a chunk of 3 (read in
// place), for each cache; int8 in groups of 16 and of 32 (a head, and two heads, per group: one
// scale per key and head, read in place) and of 8 (widened).
TEST(MultiHeadLowPrecisionCache, EveryCallWithinTheFloatBound) {
  const std::vector<Index> calls = {20, 1, 1, 1, 1, 1, 3};
  expect_every_call_within_bound("bfloat16", KVCache<Eigen::bfloat16>(32, 64), calls);
  expect_every_call_within_bound("half", KVCache<Eigen::half>(32, 64), calls);
  expect_every_call_within_bound("int8, groups of 16", Int8KVCache(32, 64, 16), calls);
  expect_every_call_within_bound("int8, groups of 32", Int8KVCache(32, 64, 32), calls);
  expect_every_call_within_bound("int8, groups of 8", Int8KVCache(32, 64, 8), calls);
}

// A sliding window of 6 tokens back, the oldest tokens dropped as the cache slides.
TEST(MultiHeadLowPrecisionCache, SlidingWindowWithDroppedTokens) {
  const std::vector<Index> calls = {4, 1, 2, 1, 1, 3, 1, 1};
  expect_every_call_within_bound("bfloat16", KVCache<Eigen::bfloat16>(32, 10), calls, 6);
  expect_every_call_within_bound("int8", Int8KVCache(32, 10, 16), calls, 6);
}

// 600 cached tokens, then single tokens: the decode path's several chunks of keys.
TEST(MultiHeadLowPrecisionCache, LongCacheOverSeveralDecodeChunks) {
  const std::vector<Index> calls = {600, 1, 2};
  expect_every_call_within_bound("half", KVCache<Eigen::half>(32, 603), calls);
  expect_every_call_within_bound("int8", Int8KVCache(32, 603, 16), calls);
}

// The in-place decode step gives the same bits on 1, 2 and 3 threads, and whatever the cache's
// buffers (one that reallocates for the step, one allocated up front): the stored rows are the
// same, and so is every operation on them.
template <typename Cache>
void expect_same_bits_for_threads_and_layouts(Cache grown, Cache allocated) {
  const MultiHeadAttention<float> layer = layer_with_features(everything);
  const Matrix x = inputs(530, layer.d_model(), 97);
  (void)layer.forward(x.topRows(529), grown);
  (void)layer.forward(x.topRows(529), allocated);
  Cache again = allocated;
  const Matrix one = support::with_threads(1, [&] { return layer.forward(x.row(529), grown); });
  const Matrix two = support::with_threads(2, [&] { return layer.forward(x.row(529), allocated); });
  const Matrix three = support::with_threads(3, [&] { return layer.forward(x.row(529), again); });
  EXPECT_TRUE(support::bitwise_equal(one, two));
  EXPECT_TRUE(support::bitwise_equal(one, three));
}

TEST(MultiHeadLowPrecisionCache, SameBitsForAnyThreadCountAndLayout) {
  expect_same_bits_for_threads_and_layouts(KVCache<Eigen::bfloat16>(32, 530),
                                           KVCache<Eigen::bfloat16>(32, 530, 530));
  expect_same_bits_for_threads_and_layouts(Int8KVCache(32, 530, 16), Int8KVCache(32, 530, 16, 530));
}

// A key beyond half's range throws, naming it, and leaves the cache as it was.
TEST(MultiHeadLowPrecisionCache, HalfCacheRejectsKeysBeyondItsRange) {
  MultiHeadAttention<float> layer(8, 2, 1);
  layer.w_k.setConstant(1e5f);
  KVCache<Eigen::half> cache(4, 10);
  EXPECT_THROW((void)layer.forward(Matrix::Ones(1, 8), cache), std::invalid_argument);
  EXPECT_EQ(cache.size(), 0);
  EXPECT_EQ(cache.tokens_seen(), 0);
}

// --- Attention over a cache (cache_attention.hpp) -----------------------------------------------
// 4 query heads on 2 K/V heads of 32 columns; q exact in float, so the bound above holds with
// e_q = 0 (e_int8 over an int8 cache).

constexpr Index cache_head_dim = 32;
const attention::Heads cache_heads(4, 2);

/// q's heads over the stored rows k, v (S x 64) under `mask`, in long double, and the bound.
Expected reference_over_cache(const Matrix& q, const RealMatrix& k, const RealMatrix& v,
                              const ref::Mask& mask, Real q_rounding) {
  const Index d = cache_head_dim;
  Expected expected{RealMatrix(q.rows(), q.cols()), RealMatrix(q.rows(), q.cols())};
  const RealMatrix q_real = ref::to_real(q);
  for (Index h = 0; h < cache_heads.num_heads; ++h) {
    const Index g = h / 2;
    const RealMatrix qh = ref::columns(q_real, h * d, d);
    const RealMatrix kg = ref::columns(k, g * d, d), vg = ref::columns(v, g * d, d);
    set_head(qh, kg, vg, ref::attention(qh, kg, vg, mask), 1 / std::sqrt(Real(d)), q_rounding, 0,
             h * d, expected);
  }
  return expected;
}

/// 600 cached tokens (three decode chunks), then L = 1, 3 (read in place, where the cache allows)
/// and 17 (widened) new queries over them, lower-right causal: within the bound, and the same bits
/// on 1 and 2 threads.
template <typename Cache>
void expect_cache_attention_within_bound(const char* label, Cache cache) {
  SCOPED_TRACE(label);
  cache.append(inputs(600, 64, 70), inputs(600, 64, 71));
  const RealMatrix k = stored_keys(cache), v = stored_values(cache);
  attention::AttentionWorkspace<float> workspace;
  for (const Index L : {1, 3, 17}) {
    SCOPED_TRACE(::testing::Message() << "L = " << L);
    const Matrix q = inputs(L, 128, 72 + unsigned(L));
    Matrix out(L, 128);
    support::with_threads(
        1, [&] { attention::scaled_dot_product_attention(q, cache, cache_heads, out, workspace); });
    EXPECT_EQ(entries_outside(out, reference_over_cache(q, k, v, ref::Mask::causal_lower_right(),
                                                        q_rounding_of<Cache>())),
              0);
    const Matrix two = support::with_threads(
        2, [&] { return attention::scaled_dot_product_attention(q, cache, cache_heads); });
    EXPECT_TRUE(support::bitwise_equal(out, two));
  }
}

// Every cache kind; int8 in groups of a head and of two heads (one scale per key and head), of 16
// (each vector scaled) and of 8 (widened to float first).
TEST(CacheAttention, EveryCacheKindWithinTheFloatBound) {
  expect_cache_attention_within_bound("float", KVCache<float>(64, 600));
  expect_cache_attention_within_bound("bfloat16", KVCache<Eigen::bfloat16>(64, 600));
  expect_cache_attention_within_bound("half", KVCache<Eigen::half>(64, 600));
  expect_cache_attention_within_bound("int8, groups of 32", Int8KVCache(64, 600, 32));
  expect_cache_attention_within_bound("int8, groups of 64", Int8KVCache(64, 600, 64));
  expect_cache_attention_within_bound("int8, groups of 16", Int8KVCache(64, 600, 16));
  expect_cache_attention_within_bound("int8, groups of 8", Int8KVCache(64, 600, 8));
}

// The last query sees the 101 newest tokens (attention::window(100, 0)): a token just outside,
// whose int8 key and value groups hold NaN, changes nothing (in the decode chunk that the window
// cuts, its weight is exactly 0 against the NaN).
TEST(CacheAttention, NaNOutsideTheWindowChangesNothing) {
  Int8KVCache cache(64, 600, 32);
  Matrix k = inputs(600, 64, 80), v = inputs(600, 64, 81);
  k(498, 3) = std::numeric_limits<float>::quiet_NaN();
  v(498, 40) = std::numeric_limits<float>::quiet_NaN();
  cache.append(k, v);
  RealMatrix k_seen = stored_keys(cache), v_seen = stored_values(cache);
  k_seen.row(498).setZero();  // masked: what it holds does not matter to the reference
  v_seen.row(498).setZero();
  const Matrix q = inputs(1, 128, 82);
  const Matrix out =
      attention::scaled_dot_product_attention(q, cache, cache_heads, attention::window(100, 0));
  EXPECT_TRUE(out.allFinite());
  EXPECT_EQ(entries_outside(
                out, reference_over_cache(q, k_seen, v_seen, ref::Mask::window(100, 0), e_int8)),
            0);
}

// A head of 1024 columns in one group of an Int8KVCache: every query entry is 1/4 and every entry
// of key j is (1 + j % 37) / 256, so each rounded product is 32767 x 127 and a head's integer sum,
// 4.26e9, would wrap an int32 (the scores then ordered backwards); the decode path's blocks of
// 512 columns (decode_kernels.hpp) keep it exact: within the bound, e_q = e_int8.
TEST(CacheAttention, Int8HeadOf1024ColumnsDoesNotOverflow) {
  const Index d = 1024, S = 600;
  Int8KVCache cache(d, S, d);
  Matrix k(S, d);
  for (Index j = 0; j < S; ++j) k.row(j).setConstant(float(1 + j % 37) * 0x1p-8f);
  cache.append(k, inputs(S, d, 87));
  const Matrix q = Matrix::Constant(1, d, 0.25f);
  const Matrix out = attention::scaled_dot_product_attention(q, cache, attention::Heads(1, 1));
  const RealMatrix q_real = ref::to_real(q), kg = stored_keys(cache), vg = stored_values(cache);
  Expected expected{RealMatrix(1, d), RealMatrix(1, d)};
  set_head(q_real, kg, vg, ref::attention(q_real, kg, vg, ref::Mask::none()),
           1 / std::sqrt(Real(d)), e_int8, 0, 0, expected);
  EXPECT_EQ(entries_outside(out, expected), 0);
}

// With identity projections the layer's step over its cache is attention over the cache of the
// new token: the same bits (the layer calls the same path).
TEST(CacheAttention, IsTheLayersStepOverItsCache) {
  MultiHeadAttention<float> layer(64, 4, 2);
  layer.w_q = Matrix::Identity(64, 64);
  layer.w_k = Matrix::Identity(64, 32);
  layer.w_v = Matrix::Identity(64, 32);
  layer.w_o = Matrix::Identity(64, 64);
  layer.b_q.setZero();
  layer.b_k.setZero();
  layer.b_v.setZero();
  layer.b_o.setZero();
  const Matrix x = inputs(530, 64, 83);
  KVCache<Eigen::bfloat16> bf16(32, 530);
  Int8KVCache int8(32, 530, 16);
  (void)layer.forward(x.topRows(529), bf16);
  (void)layer.forward(x.topRows(529), int8);
  const attention::Heads heads(4, 2);
  // The layer appends the token first; attention over the cache then reads it there.
  const Matrix step_bf16 = layer.forward(x.row(529), bf16);
  const Matrix step_int8 = layer.forward(x.row(529), int8);
  EXPECT_TRUE(support::bitwise_equal(
      step_bf16, attention::scaled_dot_product_attention(x.row(529), bf16, heads)));
  EXPECT_TRUE(support::bitwise_equal(
      step_int8, attention::scaled_dot_product_attention(x.row(529), int8, heads)));
}

TEST(CacheAttention, ShapesThatDoNotFitThrowNamingThem) {
  using attention::ShapeError;
  Int8KVCache cache(64, 10, 32);
  cache.append(inputs(5, 64, 84), inputs(5, 64, 85));
  const Matrix q = inputs(1, 128, 86);
  EXPECT_NO_THROW((void)attention::scaled_dot_product_attention(q, cache, cache_heads));
  EXPECT_EQ(support::message_of<ShapeError>([&] {
              (void)attention::scaled_dot_product_attention(q, cache, attention::Heads(4, 4));
            }),
            "attention::scaled_dot_product_attention (cache): cache.width() (= 64) must equal "
            "heads.num_kv_heads * head_dim (= 128)");
  EXPECT_THROW((void)attention::scaled_dot_product_attention(q, cache, attention::Heads(3, 1)),
               ShapeError);  // 3 does not divide 128
  EXPECT_THROW((void)attention::scaled_dot_product_attention(Matrix(0, 128), cache, cache_heads),
               ShapeError);
  EXPECT_THROW(
      (void)attention::scaled_dot_product_attention(q, Int8KVCache(64, 10, 32), cache_heads),
      ShapeError);  // no cached token
  Matrix wide(1, 129);
  attention::AttentionWorkspace<float> workspace;
  EXPECT_THROW(attention::scaled_dot_product_attention(q, cache, cache_heads, wide, workspace),
               ShapeError);
  EXPECT_THROW((void)attention::scaled_dot_product_attention(
                   q, cache, cache_heads, attention::keep(support::BoolMatrix(1, 6))),
               ShapeError);  // the mask is 1 x 5
}

// --- The decode kernel on stored rows, on every path this CPU runs ----------------------------

namespace kernels = attention::detail::kernels;

/// decode_attention's bodies on path `isa` (the functions the dispatch calls, taken directly so
/// that every path runs in one process): over float rows, and over stored rows.
template <typename Element>
struct DecodeOn {
  using Ref = kernels::MaskRef<float>;
  decltype(&kernels::baseline::decode_heads<float, Ref>) floats;
  decltype(&kernels::baseline::decode_stored_heads<float, Element, Ref>) stored;

  explicit DecodeOn(attention::Isa isa)
      : floats(&kernels::baseline::decode_heads<float, Ref>),
        stored(&kernels::baseline::decode_stored_heads<float, Element, Ref>) {
#if ATTENTION_HAS_DISPATCH
    if (isa == attention::Isa::avx2) {
      floats = &kernels::avx2::decode_heads<float, Ref>;
      stored = &kernels::avx2::decode_stored_heads<float, Element, Ref>;
    } else if (isa == attention::Isa::avx512) {
      floats = &kernels::avx512::decode_heads<float, Ref>;
      stored = &kernels::avx512::decode_stored_heads<float, Element, Ref>;
    }
#else
    (void)isa;
#endif
  }
};

/// Decode over K/V rows stored as Element (4 query heads on 2 K/V heads of d columns, L = 3, S =
/// 700: three chunks; causal lower-right) on path `isa`, against the same path on float copies of
/// the rows as widened -- bfloat16 and half converted exactly, int8 as q * s rounded to float,
/// written out here in plain C++: the same bits in every output and log-sum-exp.
template <typename Element>
::testing::AssertionResult stored_rows_give_float_bits(attention::Isa isa, Index d, Index group) {
  using StoredMatrix = Eigen::Matrix<Element, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Index num_heads = 4, heads_per_kv = 2, L = 3, S = 700, width = 2 * d;
  const Matrix q = few_bits(L, num_heads * d, 41, 1000, 1e-3f);
  StoredMatrix k(S, width), v(S, width);
  Matrix k_scales, v_scales, k_float(S, width), v_float(S, width);
  if constexpr (std::is_same_v<Element, std::int8_t>) {
    k = few_bits(S, width, 42, 127, 1.0f).template cast<std::int8_t>();
    v = few_bits(S, width, 43, 127, 1.0f).template cast<std::int8_t>();
    k_scales = few_bits(S, width / group, 44, 1000, 1e-5f).array().abs();
    v_scales = few_bits(S, width / group, 45, 1000, 1e-5f).array().abs();
    for (Index j = 0; j < S; ++j) {
      for (Index c = 0; c < width; ++c) {
        k_float(j, c) = float(k(j, c)) * k_scales(j, c / group);
        v_float(j, c) = float(v(j, c)) * v_scales(j, c / group);
      }
    }
  } else {
    k = few_bits(S, width, 42, 1000, 1e-3f).template cast<Element>();
    v = few_bits(S, width, 43, 1000, 1e-3f).template cast<Element>();
    k_float = k.template cast<float>();
    v_float = v.template cast<float>();
  }
  Matrix out_float(L, num_heads * d), out_stored(L, num_heads * d);
  Matrix lse_float(num_heads, L), lse_stored(num_heads, L);
  std::vector<kernels::HeadOperands<float>> float_heads, stored_heads;
  for (Index h = 0; h < num_heads; ++h) {
    const Index c = h * d, g = h / heads_per_kv * d;
    float_heads.push_back({q.data() + c, q.outerStride(), k_float.data() + g, width,
                           v_float.data() + g, width, out_float.data() + c, out_float.outerStride(),
                           lse_float.data() + h * L});
    stored_heads.push_back({q.data() + c, q.outerStride(), nullptr, 0, nullptr, 0,
                            out_stored.data() + c, out_stored.outerStride(),
                            lse_stored.data() + h * L});
  }
  kernels::StoredKV<Element> kv{{k.data(), width}, {v.data(), width}};
  if constexpr (std::is_same_v<Element, std::int8_t>) {
    kv.k.scales = {k_scales.data(), width / group, group, 0};
    kv.v.scales = {v_scales.data(), width / group, group, 0};
  }
  const DecodeOn<Element> on(isa);
  kernels::CallWorkspace<float> workspace;
  const kernels::ScoreRules<float> rules{1 / std::sqrt(float(d))};
  const kernels::BoundMaskRef<float, attention::CausalLowerRightMask> mask(
      attention::causal_lower_right, L, S);
  on.floats(float_heads.data(), num_heads, L, S, d, d, rules, mask.ref, workspace, heads_per_kv);
  on.stored(stored_heads.data(), num_heads, L, S, d, d, rules, mask.ref, workspace, kv,
            heads_per_kv);
  const ::testing::AssertionResult same_out = support::bitwise_equal(out_stored, out_float);
  return same_out ? support::bitwise_equal(lse_stored, lse_float) : same_out;
}

// Rows of a low-precision cache, widened in registers, give the bits of float rows holding the
// widened values, on every path: head_dim 37 (a scalar tail) for bfloat16 and half, 48 in groups
// of 16 for int8 (decode_values' 4-vector blocks span two groups).
TEST(MultiHeadLowPrecisionCache, DecodeKernelReadsStoredRowsAsTheirFloatValues) {
  for (const attention::Isa isa :
       {attention::Isa::baseline, attention::Isa::avx2, attention::Isa::avx512}) {
    if (!attention::isa_available(isa)) continue;
    SCOPED_TRACE(attention::isa_name(isa));
    EXPECT_TRUE(stored_rows_give_float_bits<Eigen::bfloat16>(isa, 37, 0));
    EXPECT_TRUE(stored_rows_give_float_bits<Eigen::half>(isa, 37, 0));
    EXPECT_TRUE(stored_rows_give_float_bits<std::int8_t>(isa, 48, 16));
  }
}

}  // namespace
}  // namespace multi_head_low_precision_cache_test
