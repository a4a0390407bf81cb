// SPDX-License-Identifier: MIT
// A user's program: built against an installed attention (find_package) or against its source
// tree (add_subdirectory, FetchContent) by tests/cmake_checks.cmake. It exits non-zero if the
// library it was given computes a wrong answer.
#include <Eigen/Core>
#include <attention/attention.hpp>
#include <attention/version.hpp>
#include <cmath>
#include <iostream>

// The CMake package version (from project(attention VERSION ...)) and the one in the header
// must not drift apart; CMakeLists.txt passes the former in.
static_assert(ATTENTION_VERSION_MAJOR == CONSUMER_PACKAGE_VERSION_MAJOR &&
                  ATTENTION_VERSION_MINOR == CONSUMER_PACKAGE_VERSION_MINOR &&
                  ATTENTION_VERSION_PATCH == CONSUMER_PACKAGE_VERSION_PATCH,
              "attention/version.hpp disagrees with the version of the CMake package");

int main() {
  // q = [1 0]; k = [[1 0], [0 1]]; v = [[1 2], [3 4]]; d_k = 2
  // s = q k^T / sqrt(2) = [0.70711, 0]    p = softmax(s) = [0.66976, 0.33024]
  // out = 0.66976 * [1 2] + 0.33024 * [3 4] = [1.66048, 2.66048]
  using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMatrixXd q(1, 2), k(2, 2), v(2, 2);
  q << 1, 0;
  k << 1, 0, 0, 1;
  v << 1, 2, 3, 4;
  const Eigen::MatrixXd out = attention::scaled_dot_product_attention(q, k, v);

  const Eigen::RowVector2d expected(1.6604769013, 2.6604769013);
  const bool ok =
      out.rows() == 1 && out.cols() == 2 && (out.row(0) - expected).cwiseAbs().maxCoeff() < 1e-9;
  std::cout << "attention " << ATTENTION_VERSION_MAJOR << '.' << ATTENTION_VERSION_MINOR << '.'
            << ATTENTION_VERSION_PATCH << ": out = [" << out << "], expected [" << expected
            << "]: " << (ok ? "ok" : "WRONG") << '\n';
  return ok ? 0 : 1;
}
