// SPDX-License-Identifier: MIT
// Tests for attention/projection.hpp: project(), y = x w + b, against the long-double reference;
// and for its kernel, attention/kernels/projection.hpp (MultiHeadAttention's projections), whose
// packed and direct paths must both give each entry as the documented chain of multiply-adds,
// bit for bit, at sizes that are not multiples of its blocks, for any thread count.

#include <gtest/gtest.h>

#include <attention/isa.hpp>
#include <attention/kernels/projection.hpp>
#include <attention/projection.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "support/eigen_matchers.hpp"
#include "support/isa_runs.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"
#include "support/scalars.hpp"

namespace projection_test {
namespace {

namespace ref = support::reference;
using attention::Index;
using attention::Matrix;
using attention::RowVector;

template <typename T>
using ColMatrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic>;

template <typename T>
class Project : public ::testing::Test {};
TYPED_TEST_SUITE(Project, support::AllScalars, support::ScalarNames);

TYPED_TEST(Project, MatchesReference) {
  // x: 7 tokens x 5 features, w: 5 x 3 (d_in x d_out), b: 1 x 3. Weights of variance 1/5 keep y
  // of order 1.
  using T = TypeParam;
  const Matrix<T> x = support::random_matrix<T>(7, 5, 1);
  const Matrix<T> w = support::random_matrix<T>(5, 3, 2) * T(0.45);
  const RowVector<T> b = support::random_matrix<T>(1, 3, 3);
  const Matrix<T> y = attention::project(x, w, b);
  ASSERT_EQ(y.rows(), 7);
  ASSERT_EQ(y.cols(), 3);
  EXPECT_TRUE(support::is_near(y, ref::project(ref::to_real(x), ref::to_real(w), ref::to_real(b)),
                               support::tolerance<T>()));
}

// out may be x itself (a square w), or w: y = x w + b of the arguments as they were.
TYPED_TEST(Project, OutputThatIsAnArgument) {
  using T = TypeParam;
  Matrix<T> x = support::random_matrix<T>(7, 5, 4);
  Matrix<T> w = support::random_matrix<T>(5, 5, 5) * T(0.45);
  const RowVector<T> b = support::random_matrix<T>(1, 5, 6);
  const ref::Matrix expected = ref::project(ref::to_real(x), ref::to_real(w), ref::to_real(b));
  attention::project(x, w, b, x);
  EXPECT_TRUE(support::is_near(x, expected, support::tolerance<T>()));
  Matrix<T> square = support::random_matrix<T>(5, 5, 7);
  const ref::Matrix expected_square =
      ref::project(ref::to_real(square), ref::to_real(w), ref::to_real(b));
  attention::project(square, w, b, w);  // out = w: y = square w + b
  EXPECT_TRUE(support::is_near(w, expected_square, support::tolerance<T>()));
}

TYPED_TEST(Project, BiasIsAddedToEveryToken) {
  // x = 0 gives y = b in every row, exactly.
  using T = TypeParam;
  const Matrix<T> w = support::random_matrix<T>(4, 6, 10);
  const RowVector<T> b = support::random_matrix<T>(1, 6, 11);
  EXPECT_TRUE(
      support::is_near(attention::project(Matrix<T>::Zero(3, 4), w, b), b.replicate(3, 1), 0));
}

TYPED_TEST(Project, IdentityWeightsAndZeroBiasGiveTheInput) {
  using T = TypeParam;
  const Matrix<T> x = support::random_matrix<T>(5, 4, 20);
  EXPECT_TRUE(support::is_near(
      attention::project(x, Matrix<T>::Identity(4, 4), RowVector<T>::Zero(4)), x, 0));
}

TYPED_TEST(Project, NonContiguousAndColumnMajorArguments) {
  using T = TypeParam;
  const Matrix<T> x_storage = support::random_matrix<T>(9, 12, 30);
  const Matrix<T> w_storage = support::random_matrix<T>(8, 10, 31);
  const ColMatrix<T> b_storage = support::random_matrix<T>(2, 10, 32);
  const auto x = x_storage.block(1, 2, 6, 7);                      // 6 x 7, row stride 12
  const auto w = w_storage.middleRows(1, 7).leftCols(4) * T(0.4);  // an expression, 7 x 4
  const auto b = b_storage.row(1).head(4);                         // a row of a column-major matrix
  const ref::Matrix expected = ref::project(ref::to_real(x), ref::to_real(w), ref::to_real(b));
  EXPECT_TRUE(support::is_near(attention::project(x, w, b), expected, support::tolerance<T>()));
  const ColMatrix<T> x_cm = x;
  EXPECT_TRUE(support::is_near(attention::project(x_cm, w, b), expected, support::tolerance<T>()));
  // Into a block of a bigger matrix; the rest stays untouched.
  Matrix<T> buffer = Matrix<T>::Constant(8, 9, T(42));
  attention::project(x, w, b, buffer.block(1, 3, 6, 4));
  EXPECT_TRUE(support::is_near(buffer.block(1, 3, 6, 4), expected, support::tolerance<T>()));
  EXPECT_EQ((buffer.array() == T(42)).count(), 72 - 24);
}

// --- Shape checks: one test per check ---------------------------------------------------------

class ProjectShapes : public ::testing::Test {
 protected:
  const Matrix<double> x = Matrix<double>::Ones(3, 4), w = Matrix<double>::Ones(4, 2);
  const RowVector<double> b = RowVector<double>::Ones(2);
  Matrix<double> out = Matrix<double>::Zero(3, 2);
};

/// The message of the ShapeError `f` throws ("" if none).
template <typename F>
std::string shape_error_message(F&& f) {
  try {
    f();
  } catch (const attention::ShapeError& e) {
    return e.what();
  }
  return "";
}

TEST_F(ProjectShapes, AcceptsConsistentShapes) {
  EXPECT_NO_THROW(attention::project(x, w, b, out));
}

TEST_F(ProjectShapes, ThrowsWhenWeightRowsDifferFromInputWidth) {
  EXPECT_THROW((void)attention::project(x, Matrix<double>::Ones(5, 2), b), attention::ShapeError);
  EXPECT_EQ(
      shape_error_message([&] { (void)attention::project(x, Matrix<double>::Ones(5, 2), b); }),
      "attention::project: w.rows() (= 5) must equal x.cols() (= 4)");
}

TEST_F(ProjectShapes, ThrowsWhenBiasHasMoreThanOneRow) {
  EXPECT_THROW((void)attention::project(x, w, Matrix<double>::Ones(2, 2)), attention::ShapeError);
  // A column vector: the message gives its shape and the one expected.
  EXPECT_EQ(
      shape_error_message([&] { (void)attention::project(x, w, Eigen::VectorXd::Ones(2).eval()); }),
      "attention::project: b (2 x 1) must be a row vector, 1 x w.cols() (= 1 x 2)");
}

TEST_F(ProjectShapes, ThrowsWhenBiasLengthDiffersFromOutputWidth) {
  EXPECT_THROW((void)attention::project(x, w, RowVector<double>::Ones(3)), attention::ShapeError);
  EXPECT_EQ(
      shape_error_message([&] { (void)attention::project(x, w, RowVector<double>::Ones(3)); }),
      "attention::project: b.cols() (= 3) must equal w.cols() (= 2)");
}

TEST_F(ProjectShapes, ThrowsWhenOutHasOtherRowCount) {
  Matrix<double> wrong(2, 2);
  EXPECT_THROW(attention::project(x, w, b, wrong), attention::ShapeError);
}

TEST_F(ProjectShapes, ThrowsWhenOutHasOtherColumnCount) {
  Matrix<double> wrong(3, 4);
  EXPECT_THROW(attention::project(x, w, b, wrong), attention::ShapeError);
  EXPECT_EQ(shape_error_message([&] { attention::project(x, w, b, wrong); }),
            "attention::project: out.cols() (= 4) must equal w.cols() (= 2)");
}

// --- The kernel: detail::projection ----------------------------------------------------------

namespace kernel = attention::detail::projection;

/// True when the kernel's Simd::fma is one fused multiply-add: on the avx2 and avx512 paths of the
/// run-time dispatch, and on the baseline path (Eigen's pmadd) when the compiler's flags enable
/// FMA; otherwise it is a multiply and an add, each rounded. (ctest runs these tests once per
/// path.)
bool fused_fma() {
#if defined(EIGEN_VECTORIZE_FMA)
  return true;
#else
  return attention::active_isa() != attention::Isa::baseline;
#endif
}

/// The kernel's documented arithmetic, written out plainly: for each entry,
///   acc = b(c); acc = acc + x(i, j) w(j, c) for j = 0, 1, ..., n - 1 (fused, or rounded twice)
template <typename T>
Matrix<T> chain_reference(const Matrix<T>& x, const Matrix<T>& w, const RowVector<T>& b) {
  Matrix<T> y(x.rows(), w.cols());
  const bool fused = fused_fma();
  for (Index i = 0; i < x.rows(); ++i) {
    for (Index c = 0; c < w.cols(); ++c) {
      T acc = b(c);
      for (Index j = 0; j < x.cols(); ++j) {
        if (fused) {
          acc = std::fma(x(i, j), w(j, c), acc);
        } else {
          const T product = x(i, j) * w(j, c);
          acc = acc + product;
        }
      }
      y(i, c) = acc;
    }
  }
  return y;
}

/// Same value in every entry, bit for bit (NaN matching NaN), else the first difference.
template <typename T>
::testing::AssertionResult same_bits(const Matrix<T>& actual, const Matrix<T>& expected) {
  if (actual.rows() != expected.rows() || actual.cols() != expected.cols()) {
    return ::testing::AssertionFailure() << "shapes differ";
  }
  for (Index i = 0; i < actual.rows(); ++i) {
    for (Index c = 0; c < actual.cols(); ++c) {
      const T a = actual(i, c), e = expected(i, c);
      if (!(a == e || (std::isnan(a) && std::isnan(e)))) {
        std::ostringstream os;
        os.precision(20);
        os << "entry (" << i << ", " << c << "): " << a << " != " << e << " (of " << actual.rows()
           << " x " << actual.cols() << ")";
        return ::testing::AssertionFailure() << os.str();
      }
    }
  }
  return ::testing::AssertionSuccess();
}

template <typename T>
Matrix<T> run_path(const char* path, const Matrix<T>& x, const Matrix<T>& w,
                   const RowVector<T>& b) {
  Matrix<T> y = Matrix<T>::Constant(x.rows(), w.cols(), T(-7));
  if (std::string(path) == "packed") {
    kernel::project_packed<T>(x, w, b, y);
  } else if (std::string(path) == "direct") {
    kernel::project_direct<T>(x, w, b, y);
  } else {
    kernel::project<T>(x, w, b, y);
  }
  return y;
}

/// Runs `body` with `n` threads (Eigen's setting, which the kernel reads), then restores the
/// default.
template <typename F>
auto with_threads(int n, F&& body) {
  Eigen::setNbThreads(n);
  auto result = body();
  Eigen::setNbThreads(0);
  return result;
}

template <typename T>
class ProjectionKernel : public ::testing::Test {};
TYPED_TEST_SUITE(ProjectionKernel, support::FastScalars, support::ScalarNames);

// Sizes around every block edge: rows around mr, mc and min_packed_rows (where the paths switch);
// columns around the vector width and the panel width nr; the inner index small, and around kc
// (where the packed path stores and reloads its accumulators) with fewer rows and columns.
template <typename T>
struct Sizes {
  using B = kernel::Blocking<T>;
  std::vector<Index> rows{
      1, 2, 3, B::mr - 1, B::mr, B::mr + 1, B::mc, B::min_packed_rows, 2 * B::mc + 5};
  std::vector<Index> cols{1, 3, B::width - 1, B::nr - 1, B::nr, B::nr + 1, 2 * B::nr + 5};
  std::vector<Index> small_inner{1, 2, 7};
  std::vector<Index> rows_long{3, B::min_packed_rows + 2};
  std::vector<Index> cols_long{B::nr - 1, 2 * B::nr + 5};
  std::vector<Index> long_inner{B::kc - 1, B::kc, B::kc + 1, 2 * B::kc + 3};
};

template <typename T>
void expect_every_path_gives_the_chain(const std::vector<Index>& inner,
                                       const std::vector<Index>& cols_list,
                                       const std::vector<Index>& rows_list, std::uint32_t seed) {
  for (const Index n : inner) {
    for (const Index cols : cols_list) {
      const Matrix<T> w = support::random_matrix<T>(n, cols, ++seed) / std::sqrt(T(n));
      const RowVector<T> b = support::random_matrix<T>(1, cols, ++seed);
      for (const Index rows : rows_list) {
        SCOPED_TRACE("rows " + std::to_string(rows) + ", n " + std::to_string(n) + ", cols " +
                     std::to_string(cols));
        const Matrix<T> x = support::random_matrix<T>(rows, n, ++seed);
        const Matrix<T> expected = chain_reference(x, w, b);
        for (const char* path : {"packed", "direct", "dispatch"}) {
          EXPECT_TRUE(same_bits(run_path(path, x, w, b), expected)) << path << " path";
        }
      }
    }
  }
}

TYPED_TEST(ProjectionKernel, EveryPathGivesTheChainBitForBit) {
  const Sizes<TypeParam> sizes;
  expect_every_path_gives_the_chain<TypeParam>(sizes.small_inner, sizes.cols, sizes.rows, 100);
  expect_every_path_gives_the_chain<TypeParam>(sizes.long_inner, sizes.cols_long, sizes.rows_long,
                                               200);
}

TYPED_TEST(ProjectionKernel, MatchesTheLongDoubleReferenceWithinTheChainBound) {
  // Rounding-error bound of a chain of n multiply-adds (Higham, Accuracy and Stability of Numerical
  // Algorithms, 2nd ed., sec. 3.1): |y - exact| <= gamma_{2n} (|b| + sum_j |x_j w_j|), with
  // gamma_k = k u / (1 - k u) and u = eps / 2 (2n roundings without FMA, n with it).
  using T = TypeParam;
  const Index rows = 37, n = 2 * kernel::Blocking<T>::kc + 3, cols = 45;
  const Matrix<T> x = support::random_matrix<T>(rows, n, 1);
  const Matrix<T> w = support::random_matrix<T>(n, cols, 2) / std::sqrt(T(n));
  const RowVector<T> b = support::random_matrix<T>(1, cols, 3);
  const ref::Matrix exact = ref::project(ref::to_real(x), ref::to_real(w), ref::to_real(b));
  const ref::Matrix magnitude = ref::project(ref::to_real(x).cwiseAbs(), ref::to_real(w).cwiseAbs(),
                                             ref::to_real(b).cwiseAbs());
  const long double u = std::numeric_limits<T>::epsilon() / 2.0L;
  const long double gamma = 2.0L * n * u / (1.0L - 2.0L * n * u);
  for (const char* path : {"packed", "direct"}) {
    SCOPED_TRACE(path);
    const Matrix<T> y = run_path(path, x, w, b);
    for (Index i = 0; i < rows; ++i) {
      for (Index c = 0; c < cols; ++c) {
        ASSERT_LE(std::abs(static_cast<long double>(y(i, c)) - exact(i, c)),
                  gamma * magnitude(i, c))
            << "entry (" << i << ", " << c << ")";
      }
    }
  }
}

TYPED_TEST(ProjectionKernel, OneInputFeatureAndNoInputFeature) {
  // n = 1: y = b + x(i, 0) w(0, :), one rounding (fused) or two. n = 0: y = b exactly.
  using T = TypeParam;
  const Index rows = kernel::Blocking<T>::mc + 3, cols = kernel::Blocking<T>::nr + 3;
  const Matrix<T> x = support::random_matrix<T>(rows, 1, 7);
  const Matrix<T> w = support::random_matrix<T>(1, cols, 8);
  const RowVector<T> b = support::random_matrix<T>(1, cols, 9);
  for (const Index r : {Index(1), Index(3), rows}) {
    for (const char* path : {"packed", "direct"}) {
      SCOPED_TRACE(std::string(path) + ", rows " + std::to_string(r));
      const Matrix<T> y = run_path(path, Matrix<T>(x.topRows(r)), w, b);
      EXPECT_TRUE(same_bits(y, chain_reference(Matrix<T>(x.topRows(r)), w, b)));
      const Matrix<T> empty_x(r, 0);
      EXPECT_TRUE(
          same_bits(run_path(path, empty_x, Matrix<T>(0, cols), b), Matrix<T>(b.replicate(r, 1))));
    }
  }
}

TYPED_TEST(ProjectionKernel, StridedOperandsAndOutputInsideABiggerMatrix) {
  // x, w and y as blocks of bigger row-major matrices (row strides != widths): the kernel reads and
  // writes through the strides, and no entry of y's matrix outside the block changes.
  using T = TypeParam;
  const Index rows = kernel::Blocking<T>::mc + 5, n = 19, cols = 2 * kernel::Blocking<T>::nr + 3;
  const Matrix<T> x_storage = support::random_matrix<T>(rows + 2, n + 6, 11);
  const Matrix<T> w_storage = support::random_matrix<T>(n + 1, cols + 4, 12);
  const RowVector<T> b = support::random_matrix<T>(1, cols, 13);
  const auto x = x_storage.block(2, 3, rows, n);
  const auto w = w_storage.block(1, 4, n, cols);
  const Matrix<T> expected = chain_reference(Matrix<T>(x), Matrix<T>(w), b);
  for (const bool packed : {true, false}) {
    SCOPED_TRACE(packed ? "packed" : "direct");
    for (const Index r : {Index(2), Index(3), rows}) {
      Matrix<T> buffer = Matrix<T>::Constant(rows + 3, cols + 5, T(42));
      auto y = buffer.block(1, 2, r, cols);
      if (packed) {
        kernel::project_packed<T>(x.topRows(r), w, b, y);
      } else {
        kernel::project_direct<T>(x.topRows(r), w, b, y);
      }
      EXPECT_TRUE(same_bits(Matrix<T>(y), Matrix<T>(expected.topRows(r))));
      EXPECT_EQ((buffer.array() == T(42)).count(), buffer.size() - r * cols);
    }
  }
}

TYPED_TEST(ProjectionKernel, NonFiniteInputStaysInItsRowAndColumn) {
  // An inf in x(i, j) reaches only row i of y; a NaN in w(j, c) only column c. The zero padding of
  // rows and columns past the edges must not leak either (0 * inf is NaN in a padded lane).
  using T = TypeParam;
  const Index rows = kernel::Blocking<T>::mc + 3, n = 21, cols = kernel::Blocking<T>::nr + 5;
  Matrix<T> x = support::random_matrix<T>(rows, n, 21);
  Matrix<T> w = support::random_matrix<T>(n, cols, 22);
  const RowVector<T> b = support::random_matrix<T>(1, cols, 23);
  x(rows - 1, 4) = std::numeric_limits<T>::infinity();
  w(6, cols - 1) = std::numeric_limits<T>::quiet_NaN();
  for (const char* path : {"packed", "direct"}) {
    SCOPED_TRACE(path);
    const Matrix<T> y = run_path(path, x, w, b);
    EXPECT_TRUE(same_bits(y, chain_reference(x, w, b)));
    EXPECT_TRUE(y.col(cols - 1).array().isNaN().all());
    EXPECT_TRUE(y.leftCols(cols - 1).topRows(rows - 1).allFinite());
    EXPECT_EQ(y.row(rows - 1).array().isInf().count() + y.row(rows - 1).array().isNaN().count(),
              cols);
  }
}

TYPED_TEST(ProjectionKernel, SameBitsForAnyThreadCountAndRowSplit) {
  // Each entry is its own chain, so neither the thread count (packing and tasks are shared out
  // differently) nor splitting the rows into two calls (which may also switch paths) changes a bit.
  using T = TypeParam;
  const Index rows = 3 * kernel::Blocking<T>::mc + 7, n = kernel::Blocking<T>::kc + 9;
  const Index cols = 5 * kernel::Blocking<T>::nr + 1;
  const Matrix<T> x = support::random_matrix<T>(rows, n, 31);
  const Matrix<T> w = support::random_matrix<T>(n, cols, 32) / std::sqrt(T(n));
  const RowVector<T> b = support::random_matrix<T>(1, cols, 33);
  const Matrix<T> one = with_threads(1, [&] { return run_path("dispatch", x, w, b); });
  EXPECT_TRUE(same_bits(one, chain_reference(x, w, b)));
  for (const int threads : {2, 3}) {
    SCOPED_TRACE(std::to_string(threads) + " threads");
    EXPECT_TRUE(
        same_bits(with_threads(threads, [&] { return run_path("dispatch", x, w, b); }), one));
    // Few rows with several threads: the panels are split among the threads.
    const Matrix<T> few = x.topRows(kernel::Blocking<T>::min_packed_rows + 1);
    EXPECT_TRUE(same_bits(with_threads(threads, [&] { return run_path("dispatch", few, w, b); }),
                          Matrix<T>(one.topRows(few.rows()))));
  }
  for (const Index split : {Index(1), Index(3), kernel::Blocking<T>::mr + 1, Index(64), rows - 1}) {
    Matrix<T> parts(rows, cols);
    parts.topRows(split) = run_path("dispatch", Matrix<T>(x.topRows(split)), w, b);
    parts.bottomRows(rows - split) =
        run_path("dispatch", Matrix<T>(x.bottomRows(rows - split)), w, b);
    EXPECT_TRUE(same_bits(parts, one)) << "split at " << split;
  }
}

TYPED_TEST(ProjectionKernel, DirectPathSameBitsForAnyThreadCountAndColumnBlocks) {
  // The direct path runs the inner index in steps of direct_kc_few or direct_kc_many rows of W and
  // cuts the columns into blocks (a run per thread for at most mr rows, direct_block_panels
  // panels for more); none of it may change a bit. Sizes: two blocks of panels and a tail panel,
  // the inner index 8 steps of direct_kc_many and a partial one (enough W for 3 threads), rows on
  // both sides of mr.
  using T = TypeParam;
  using B = kernel::Blocking<T>;
  const Index n = 8 * B::direct_kc_many + 5;
  const Index cols = (2 * B::direct_block_panels + 1) * B::nr + 5;
  const Matrix<T> w = support::random_matrix<T>(n, cols, 41) / std::sqrt(T(n));
  const RowVector<T> b = support::random_matrix<T>(1, cols, 42);
  for (const Index rows : {Index(1), Index(2), B::mr, B::mr + 1, B::mc}) {
    const Matrix<T> x = support::random_matrix<T>(rows, n, 43 + static_cast<std::uint32_t>(rows));
    const Matrix<T> expected = chain_reference(x, w, b);
    for (const int threads : {1, 2, 3}) {
      SCOPED_TRACE("rows " + std::to_string(rows) + ", " + std::to_string(threads) + " threads");
      EXPECT_TRUE(
          same_bits(with_threads(threads, [&] { return run_path("direct", x, w, b); }), expected));
    }
  }
}

}  // namespace
}  // namespace projection_test
