#pragma once
// SPDX-License-Identifier: MIT
//
// Reproducible random test inputs. Eigen's Matrix::Random uses std::rand, and the standard's
// distributions (std::uniform_real_distribution, std::normal_distribution) are not specified
// bit for bit, so both differ across platforms. std::mt19937's raw 32-bit output sequence is fixed
// by the standard, so everything here is built from it alone: the same seed gives the same
// numbers with every compiler and library.

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <random>

namespace support {

template <typename T>
using RowMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Uniform in (0, 1), from one raw output of the engine: (x + 0.5) / 2^32.
inline double unit_uniform(std::mt19937& engine) {
  return (static_cast<double>(engine()) + 0.5) / 4294967296.0;
}

/// Roughly standard normal: the sum of four uniforms (Irwin-Hall), centred and scaled to
/// variance 1. Values stay within +-2 sqrt(3) ~ +-3.46, so no test input is an outlier by accident.
inline double normalish(std::mt19937& engine) {
  double sum = 0.0;
  for (int i = 0; i < 4; ++i) sum += unit_uniform(engine);
  return (sum - 2.0) * std::sqrt(3.0);  // Var(sum of 4 U(0,1)) = 4/12 = 1/3
}

/// rows x cols, row-major, entries roughly N(0, 1), filled row by row from std::mt19937(seed).
template <typename T>
RowMatrix<T> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed) {
  std::mt19937 engine(seed);
  RowMatrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = static_cast<T>(normalish(engine));
  }
  return m;
}

/// rows x cols, entries uniform in (lo, hi) (NumPy's np.random.rand is lo = 0, hi = 1).
template <typename T>
RowMatrix<T> random_uniform(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed, double lo,
                            double hi) {
  std::mt19937 engine(seed);
  RowMatrix<T> m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) {
      m(i, j) = static_cast<T>(lo + (hi - lo) * unit_uniform(engine));
    }
  }
  return m;
}

/// Inputs of one attention call: q (L x d_k), k (S x d_k), v (S x d_v).
template <typename T>
struct QueryKeyValue {
  RowMatrix<T> q, k, v;
};

/// Random q, k and v (random_matrix from seeds seed, seed + 1 and seed + 2).
template <typename T>
QueryKeyValue<T> random_qkv(Eigen::Index num_queries, Eigen::Index num_keys, Eigen::Index d_k,
                            Eigen::Index d_v, std::uint32_t seed) {
  return {random_matrix<T>(num_queries, d_k, seed), random_matrix<T>(num_keys, d_k, seed + 1),
          random_matrix<T>(num_keys, d_v, seed + 2)};
}

/// rows x cols of flags, each true with probability p_visible (a random keep mask).
inline BoolMatrix random_keep(Eigen::Index rows, Eigen::Index cols, std::uint32_t seed,
                              double p_visible) {
  std::mt19937 engine(seed);
  BoolMatrix m(rows, cols);
  for (Eigen::Index i = 0; i < rows; ++i) {
    for (Eigen::Index j = 0; j < cols; ++j) m(i, j) = unit_uniform(engine) < p_visible;
  }
  return m;
}

}  // namespace support
