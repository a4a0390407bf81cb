// SPDX-License-Identifier: MIT
//
// kernels/micro_kernels.hpp against naive loops: the packed key panel's layout, the q k^T and p v
// micro-kernels (p read plainly and transposed), and the tile products built from them, on inner
// lengths that are not multiples of anything. Also compiled for the build machine
// (tests/CMakeLists.txt), so that every register blocking runs.

#include <gtest/gtest.h>

#include <attention/kernels/micro_kernels.hpp>
#include <cmath>
#include <limits>

#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
namespace kernels = attention::detail::kernels;

template <typename Scalar>
class MicroKernels : public ::testing::Test {};
using FastScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(MicroKernels, FastScalars, support::ScalarNames);

template <typename Scalar>
using Matrix = support::RowMatrix<Scalar>;
template <typename Scalar>
using Buffer = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;  // aligned, as the kernels' buffers

using support::product_tolerance;

/// Naive a (rows x n) b (n x cols) in long double.
template <typename Scalar>
long double dot(const Matrix<Scalar>& a, Index i, const Matrix<Scalar>& b, Index j) {
  long double sum = 0;
  for (Index t = 0; t < a.cols(); ++t) sum += static_cast<long double>(a(i, t)) * b(t, j);
  return sum;
}

// Panel of key block kb: entry (kk, j) is k(kb * block_cols + j, kk), zero past the last key.
TYPED_TEST(MicroKernels, PackKeyBlockTransposesAndPadsWithZeros) {
  using Scalar = TypeParam;
  constexpr Index bc = kernels::Geometry<Scalar>::block_cols;
  const Index num_keys = 2 * bc + 3, d = 5;
  const Matrix<Scalar> k = support::random_matrix<Scalar>(num_keys, d + 2, 1);  // row stride d + 2
  Buffer<Scalar> panel(d * bc);
  for (Index kb = 0; kb < 3; ++kb) {
    panel.setConstant(Scalar(99));
    kernels::pack_key_block(k.data(), k.outerStride(), num_keys, d, kb, panel.data());
    for (Index kk = 0; kk < d; ++kk) {
      for (Index j = 0; j < bc; ++j) {
        const Index key = kb * bc + j;
        EXPECT_EQ(panel(kk * bc + j), key < num_keys ? k(key, kk) : Scalar(0))
            << "kb " << kb << ", kk " << kk << ", j " << j;
      }
    }
  }
}

// s = q k^T on one mr x nr micro-tile, inner length d = 1 .. 37.
TYPED_TEST(MicroKernels, QkMicroKernelIsAProductWithThePackedPanel) {
  using Scalar = TypeParam;
  using G = kernels::Geometry<Scalar>;
  constexpr Index mr = G::mr, nr = G::nr, bc = G::block_cols;
  for (const Index d : {1, 2, 7, 16, 37}) {
    const Matrix<Scalar> q = support::random_matrix<Scalar>(mr, d, 10 + static_cast<unsigned>(d));
    const Matrix<Scalar> k = support::random_matrix<Scalar>(bc, d, 20 + static_cast<unsigned>(d));
    Buffer<Scalar> panel(d * bc), s(mr * bc);
    kernels::pack_key_block(k.data(), k.outerStride(), bc, d, 0, panel.data());
    const Matrix<Scalar> kt = k.transpose();
    for (Index c = 0; c < bc; c += nr) {
      kernels::qk_micro_kernel<Scalar, static_cast<int>(mr)>(q.data(), d, panel.data() + c, bc, d,
                                                             s.data() + c, bc);
    }
    for (Index r = 0; r < mr; ++r) {
      for (Index j = 0; j < bc; ++j) {
        EXPECT_NEAR(s(r * bc + j), dot(q, r, kt, j), product_tolerance<Scalar>(d))
            << "d " << d << ", r " << r << ", j " << j;
      }
    }
  }
}

// o += p v (and p^T v) on MR x NP vectors: the products are added to what o held.
TYPED_TEST(MicroKernels, PvMicroKernelAddsTheProductToTheAccumulator) {
  using Scalar = TypeParam;
  using G = kernels::Geometry<Scalar>;
  constexpr Index mr = G::mr, w = G::width;
  constexpr int np = 2;
  const Index ld = np * w + 3;  // v's rows are not a whole number of vectors apart
  for (const Index n : {1, 5, 32, 41}) {
    const Matrix<Scalar> p = support::random_matrix<Scalar>(mr, n, 30 + static_cast<unsigned>(n));
    const Matrix<Scalar> pt = p.transpose();
    const Matrix<Scalar> v = support::random_matrix<Scalar>(n, ld, 40 + static_cast<unsigned>(n));
    const Matrix<Scalar> start = support::random_matrix<Scalar>(mr, np * w, 50);
    Buffer<Scalar> o = Eigen::Map<const Buffer<Scalar>>(start.data(), mr * np * w);
    Buffer<Scalar> o_t = o;
    kernels::pv_micro_kernel<Scalar, static_cast<int>(mr), np>(p.data(), n, v.data() + 1, ld, n,
                                                               o.data(), np * w);
    kernels::pv_micro_kernel<Scalar, static_cast<int>(mr), np, true>(pt.data(), mr, v.data() + 1,
                                                                     ld, n, o_t.data(), np * w);
    for (Index r = 0; r < mr; ++r) {
      for (Index x = 0; x < np * w; ++x) {
        long double expected = start(r, x);
        for (Index j = 0; j < n; ++j) expected += static_cast<long double>(p(r, j)) * v(j, 1 + x);
        EXPECT_NEAR(o(r * np * w + x), expected, product_tolerance<Scalar>(n + 1)) << r << "," << x;
        EXPECT_EQ(o_t(r * np * w + x), o(r * np * w + x)) << "transposed read, " << r << "," << x;
      }
    }
  }
}

// A whole tile: s = a panel^T over every micro-tile, then o += s v with a width that needs the
// 1-vector tail, and o += s^T v.
TYPED_TEST(MicroKernels, TileProductsCoverTheWholeTile) {
  using Scalar = TypeParam;
  using G = kernels::Geometry<Scalar>;
  constexpr Index mr = G::mr, w = G::width, bc = G::block_cols;
  const Index rows = 2 * mr, d = 9, width = 3 * w;
  const Matrix<Scalar> a = support::random_matrix<Scalar>(rows, d, 60);
  const Matrix<Scalar> k = support::random_matrix<Scalar>(bc, d, 61);
  Buffer<Scalar> panel(d * bc), s(rows * bc);
  kernels::pack_key_block(k.data(), k.outerStride(), bc, d, 0, panel.data());
  kernels::multiply_by_panel(a.data(), d, rows, panel.data(), d, s.data(), bc);
  const Matrix<Scalar> kt = k.transpose();
  for (Index r = 0; r < rows; ++r) {
    for (Index j = 0; j < bc; ++j) {
      EXPECT_NEAR(s(r * bc + j), dot(a, r, kt, j), product_tolerance<Scalar>(d)) << r << "," << j;
    }
  }
  const Matrix<Scalar> sm = Eigen::Map<const Matrix<Scalar>>(s.data(), rows, bc);
  const Matrix<Scalar> v = support::random_matrix<Scalar>(bc, width, 62);
  Buffer<Scalar> o = Buffer<Scalar>::Zero(rows * width);
  kernels::accumulate_product(s.data(), bc, rows, v.data(), width, bc, o.data(), width, width);
  // s^T v: s read as the transpose of a bc x rows tile, i.e. a rows-wide tile of rows' weights.
  const Matrix<Scalar> st_source = sm.transpose();  // bc x rows: its transpose is s
  Buffer<Scalar> o_t = Buffer<Scalar>::Zero(rows * width);
  kernels::accumulate_product<true>(st_source.data(), rows, rows, v.data(), width, bc, o_t.data(),
                                    width, width);
  for (Index r = 0; r < rows; ++r) {
    for (Index x = 0; x < width; ++x) {
      EXPECT_NEAR(o(r * width + x), dot(sm, r, v, x), product_tolerance<Scalar>(bc + d) * d)
          << r << "," << x;
      EXPECT_EQ(o_t(r * width + x), o(r * width + x)) << r << "," << x;
    }
  }
}

// The geometries' promises: nr divides block_cols, mr divides block_rows, and the accumulators of
// an mr x 2-vector block leave registers for the operands (2 panel vectors and a broadcast); the
// backward's transposed products step through block_cols rows mr at a time.
template <typename G, typename Scalar>
void expect_geometry_fits() {
  EXPECT_EQ(G::width, (kernels::Simd<Scalar>::width));
  EXPECT_EQ(G::block_cols % G::nr, 0);
  EXPECT_EQ(G::block_rows % G::mr, 0);
  EXPECT_LE(2 * G::mr + 3, kernels::Simd<Scalar>::registers);
}

TYPED_TEST(MicroKernels, GeometryFitsTheRegisterFile) {
  using Scalar = TypeParam;
  expect_geometry_fits<kernels::Geometry<Scalar>, Scalar>();
  expect_geometry_fits<kernels::BackwardGeometry<Scalar>, Scalar>();
  // The forward's key tiles per call (Geometry::key_tile): whole micro-tiles, never narrower
  // than block_cols, and a function of the head dimensions alone.
  using G = kernels::Geometry<Scalar>;
  for (const Index d : {Index{1}, Index{24}, Index{64}, Index{65}, Index{128}}) {
    const Index bc = G::key_tile(d, d);
    EXPECT_EQ(bc % G::nr, 0) << "d = " << d;
    EXPECT_TRUE(bc == G::block_cols || bc == 2 * G::block_cols) << "d = " << d;
    if (d > 64) {
      EXPECT_EQ(bc, G::block_cols) << "d = " << d;
    }
  }
  EXPECT_EQ(kernels::BackwardGeometry<Scalar>::block_cols % kernels::BackwardGeometry<Scalar>::mr,
            0);
}

}  // namespace
