// SPDX-License-Identifier: MIT
// A user's MPI program, built against attention::mpi by tests/cmake_checks.cmake (when MPI is
// found) and run under mpiexec. It exits non-zero if ring attention computes a wrong answer.
#include <mpi.h>

#include <Eigen/Core>
#include <attention/mpi.hpp>
#include <cmath>
#include <iostream>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  // Every rank holds the query q = [1 0] and one key: [1 0] with value [1 2] on even ranks,
  // [0 1] with value [3 4] on odd ones. Scores (d_k = 2): s0 = 1 / sqrt(2) for the n0 even keys,
  // s1 = 0 for the n1 odd keys, so
  //   out = (n0 e^s0 [1 2] + n1 e^s1 [3 4]) / (n0 e^s0 + n1 e^s1)
  // which with two ranks is the worked example [1.66048, 2.66048] of the other consumer.
  using RowMatrixXd = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMatrixXd q(1, 2), k(1, 2), v(1, 2);
  q << 1, 0;
  if (rank % 2 == 0) {
    k << 1, 0;
    v << 1, 2;
  } else {
    k << 0, 1;
    v << 3, 4;
  }
  const RowMatrixXd out = attention::mpi::ring_attention(MPI_COMM_WORLD, q, k, v);

  const double n0 = (ranks + 1) / 2, n1 = ranks / 2;
  const double w0 = n0 * std::exp(1 / std::sqrt(2.0)), w1 = n1;
  const Eigen::RowVector2d expected =
      (w0 * Eigen::RowVector2d(1, 2) + w1 * Eigen::RowVector2d(3, 4)) / (w0 + w1);
  const bool ok =
      out.rows() == 1 && out.cols() == 2 && (out.row(0) - expected).cwiseAbs().maxCoeff() < 1e-12;
  std::cout << "rank " << rank << " of " << ranks << ": out = [" << out << "], expected ["
            << expected << "]: " << (ok ? "ok" : "WRONG") << '\n';
  int all_ok = ok ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  MPI_Finalize();
  return all_ok ? 0 : 1;
}
