// SPDX-License-Identifier: MIT
// Must not compile. Mixtures of scalar types the library does not accept (low_precision.hpp), in
// attention calls and in KVCache::append: each fails with one static_assert that says what is
// allowed, and nothing else. The test LowPrecisionNamesTheAllowedTypes
// (tests/CMakeLists.txt) runs tests/masks/expect_compile_errors.cmake on this file.
//
// clang-format off
// expect-error: q, k and v must have one scalar type among float, double and long double; or k and v one of float, Eigen::bfloat16 and Eigen::half, with q float or that same type
// expect-error: q, k and v must have one scalar type among float, double and long double; or k and v one of float, Eigen::bfloat16 and Eigen::half, with q float or that same type
// expect-error: q, k and v must have one scalar type among float, double and long double; or k and v one of float, Eigen::bfloat16 and Eigen::half, with q float or that same type
// expect-error: q, k and v must have one scalar type among float, double and long double; or k and v one of float, Eigen::bfloat16 and Eigen::half, with q float or that same type
// expect-error: attention::KVCache::append: k_new and v_new must have the cache's scalar type, or float for a cache of Eigen::bfloat16 or Eigen::half
// clang-format on

#include <attention/attention.hpp>

int main() {
  using attention::Matrix;
  const Matrix<float> f = Matrix<float>::Ones(2, 2);
  const Matrix<long double> ld = Matrix<long double>::Ones(2, 2);
  const Matrix<Eigen::bfloat16> b = f.cast<Eigen::bfloat16>();
  const Matrix<Eigen::half> h = f.cast<Eigen::half>();
  float sum = 0;
  // bfloat16 queries with half keys and values: k and v's type must be q's (or q float).
  sum += float(attention::scaled_dot_product_attention(b, h, h).sum());
  // bfloat16 queries with float keys and values.
  sum += float(attention::scaled_dot_product_attention(b, f, f).sum());
  // long double queries with bfloat16 keys and values.
  sum += float(attention::scaled_dot_product_attention_lse(ld, b, b).output.sum());
  // k and v of different types.
  sum += float(attention::scaled_dot_product_attention(f, b, h).sum());
  // double rows appended to a half cache.
  attention::KVCache<Eigen::half> cache(2, 4);
  cache.append(Matrix<double>::Ones(1, 2), Matrix<double>::Ones(1, 2));
  return sum > 0 ? 0 : 1;
}
