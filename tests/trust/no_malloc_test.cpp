// SPDX-License-Identifier: MIT
//
// No hidden allocation: the kernels that promise to allocate nothing are called with Eigen's heap
// guard off (Eigen::internal::set_is_malloc_allowed(false), EIGEN_RUNTIME_NO_MALLOC, as in Eigen's
// test/nomalloc.cpp), and with every global operator new counted, so a std::vector or any other C++
// allocation is caught too.
//   softmax_rows(x, out) and softmax_rows(x, x): "Allocates nothing when x is a row-major matrix or
//   view" (softmax.hpp)
//   scaled_dot_product_attention(q, k, v, out, workspace, ...): "once `workspace` has served a call
//   of these sizes, further calls allocate nothing on the heap" (scaled_dot_product.hpp), also
//   for bfloat16 inputs (low_precision.hpp)
//   KVCache append / extend / drop_oldest: "Once the buffers are large enough ... never allocate"
//   (kv_cache.hpp)
//
// Eigen reports a forbidden allocation through eigen_assert, which NDEBUG compiles away. So before
// any Eigen header, eigen_assert is redefined to count failures: the check then holds in Release
// builds too, and a failure is a test failure rather than an abort.

#include <cstddef>
#include <cstdlib>
#include <new>

namespace trust_alloc {
inline int eigen_assert_failures = 0;
inline const char* last_eigen_assert = "";
inline bool counting = false;
inline int operator_new_calls = 0;
}  // namespace trust_alloc

#define eigen_assert(x)                                          \
  ((x) ? static_cast<void>(0)                                    \
       : static_cast<void>(++trust_alloc::eigen_assert_failures, \
                           trust_alloc::last_eigen_assert = #x))

#include <gtest/gtest.h>

#include <string>

#include "attention/attention.hpp"
#include "support/eigen_matchers.hpp"
#include "support/random.hpp"

#if !defined(EIGEN_RUNTIME_NO_MALLOC)
#error "no_malloc_test.cpp must be compiled with -DEIGEN_RUNTIME_NO_MALLOC"
#endif

// ---- Counting replacements of the global allocation functions -----------------------------------
// Each operator new gets its memory from malloc (or aligned_alloc) and each operator delete returns
// it with free, which GCC's -Wmismatched-new-delete cannot see are paired here.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace {
void* counted_allocate(std::size_t size, std::size_t alignment) {
  if (trust_alloc::counting) ++trust_alloc::operator_new_calls;
  if (size == 0) size = 1;
  void* p = nullptr;
  if (alignment <= alignof(std::max_align_t)) {
    p = std::malloc(size);
  } else {
    p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment);
  }
  return p;
}
void* allocate_or_throw(std::size_t size, std::size_t alignment) {
  void* p = counted_allocate(size, alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

void* operator new(std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new[](std::size_t size) { return allocate_or_throw(size, 0); }
void* operator new(std::size_t size, std::align_val_t a) {
  return allocate_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a) {
  return allocate_or_throw(size, static_cast<std::size_t>(a));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return counted_allocate(size, 0);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return counted_allocate(size, 0);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using attention::Index;
template <typename Scalar>
using Mat = attention::Matrix<Scalar>;
using BoolMat = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct Allocations {
  int eigen = 0;         // Eigen heap allocations refused by set_is_malloc_allowed(false)
  int operator_new = 0;  // calls of any global operator new
  const char* eigen_message = "";
};

/// Runs f with Eigen's heap guard on and operator new counted.
template <typename F>
Allocations allocations_in(F&& f) {
  const int eigen_before = trust_alloc::eigen_assert_failures;
  trust_alloc::operator_new_calls = 0;
  trust_alloc::last_eigen_assert = "";
  Eigen::internal::set_is_malloc_allowed(false);
  trust_alloc::counting = true;
  f();
  trust_alloc::counting = false;
  Eigen::internal::set_is_malloc_allowed(true);
  return {trust_alloc::eigen_assert_failures - eigen_before, trust_alloc::operator_new_calls,
          trust_alloc::last_eigen_assert};
}

::testing::AssertionResult allocates_nothing(const Allocations& a) {
  if (a.eigen == 0 && a.operator_new == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << a.eigen << " Eigen allocation(s) (" << a.eigen_message
                                       << "), " << a.operator_new << " operator new call(s)";
}

// The guard itself works: a plain Eigen allocation is counted, in any build type.
TEST(NoMallocGuard, CatchesAnEigenAllocation) {
  const Allocations a = allocations_in([] {
    Eigen::VectorXd v(1000);
    v.setZero();
  });
  EXPECT_EQ(a.eigen, 1);
  const Allocations b = allocations_in([] { const std::string s(100, 'x'); });
  EXPECT_GE(b.operator_new, 1);
}

template <typename Scalar>
class NoMalloc : public ::testing::Test {};
using Scalars = ::testing::Types<float, double, long double>;
TYPED_TEST_SUITE(NoMalloc, Scalars, support::ScalarNames);

TYPED_TEST(NoMalloc, SoftmaxRowsIntoOutputAllocatesNothing) {
  using Scalar = TypeParam;
  const Mat<Scalar> x = support::random_matrix<Scalar>(9, 37, 1);
  Mat<Scalar> out(9, 37);
  Mat<Scalar> buffer(20, 37);
  EXPECT_TRUE(allocates_nothing(allocations_in([&] { attention::softmax_rows(x, out); })));
  // Into a block of a larger buffer, as STYLE.md shows: softmax_rows(scores, buf.middleRows(0, 4)).
  EXPECT_TRUE(allocates_nothing(
      allocations_in([&] { attention::softmax_rows(x.topRows(4), buffer.middleRows(3, 4)); })));
  EXPECT_TRUE(out.isApprox(attention::softmax_rows(x)));
}

TYPED_TEST(NoMalloc, SoftmaxRowsInPlaceAllocatesNothing) {
  using Scalar = TypeParam;
  Mat<Scalar> x = support::random_matrix<Scalar>(9, 37, 2);
  const Mat<Scalar> expected = attention::softmax_rows(x);
  EXPECT_TRUE(allocates_nothing(allocations_in([&] { attention::softmax_rows(x, x); })));
  EXPECT_TRUE(x.isApprox(expected));
  // In place on a block of rows, and on the scores of a masked row (all -inf -> zeros).
  Mat<Scalar> y = support::random_matrix<Scalar>(9, 37, 3);
  y.row(5).setConstant(-std::numeric_limits<Scalar>::infinity());
  EXPECT_TRUE(allocates_nothing(
      allocations_in([&] { attention::softmax_rows(y.middleRows(2, 5), y.middleRows(2, 5)); })));
  EXPECT_EQ(y.row(5).cwiseAbs().sum(), Scalar(0));
}

// The tiled kernel given its workspace: the first call sizes the workspace, the next ones (same or
// smaller sizes, any mask) allocate nothing.
TYPED_TEST(NoMalloc, ScaledDotProductWithWorkspaceAllocatesNothing) {
  using Scalar = TypeParam;
  const Index L = 150, S = 133, d_k = 72, d_v = 40;  // several tiles, d_v not a vector multiple
  const Mat<Scalar> q = support::random_matrix<Scalar>(L, d_k, 4);
  const Mat<Scalar> k = support::random_matrix<Scalar>(S, d_k, 5);
  const Mat<Scalar> v = support::random_matrix<Scalar>(S, d_v, 6);
  const BoolMat keep = support::random_keep(L, S, 7, 0.6);
  const Mat<Scalar> bias = support::random_matrix<Scalar>(L, S, 8);
  Mat<Scalar> out(L, d_v), small_out(10, d_v);
  attention::AttentionWorkspace<Scalar> workspace;
  attention::scaled_dot_product_attention(q, k, v, out, workspace);  // sizes the workspace

  attention::Options options;
  options.scale = 0.25;
  const Allocations a = allocations_in([&] {
    attention::scaled_dot_product_attention(q, k, v, out, workspace);
    attention::scaled_dot_product_attention(q, k, v, out, workspace, attention::causal);
    attention::scaled_dot_product_attention(q, k, v, out, workspace, attention::keep(keep));
    attention::scaled_dot_product_attention(q, k, v, out, workspace, attention::bias(bias),
                                            options);
    attention::scaled_dot_product_attention(q.topRows(10), k.topRows(20), v.topRows(20), small_out,
                                            workspace, attention::causal);
  });
  if constexpr (attention::detail::flash::supported<Scalar>) {
    EXPECT_TRUE(allocates_nothing(a));
  } else {
    // Documented (scaled_dot_product.hpp): long double takes the materialising path, which
    // allocates its L x S weights on every call.
    EXPECT_FALSE(allocates_nothing(a));
  }
  const Mat<Scalar> expected =
      attention::scaled_dot_product_attention(q, k, v, attention::bias(bias), options);
  EXPECT_TRUE(out.isApprox(expected));
}

// bfloat16 inputs (low_precision.hpp), and float q with bfloat16 k and v: the workspace also
// keeps the float copies of the operands and of the result, so these calls allocate nothing
// either once it has served the largest.
TEST(NoMallocLowPrecision, ScaledDotProductWithWorkspaceAllocatesNothing) {
  using Bf16 = Eigen::bfloat16;
  const Index L = 150, S = 133, d_k = 72, d_v = 40;
  const Mat<Bf16> q = support::random_matrix<Bf16>(L, d_k, 4);
  const Mat<Bf16> k = support::random_matrix<Bf16>(S, d_k, 5);
  const Mat<Bf16> v = support::random_matrix<Bf16>(S, d_v, 6);
  const Mat<float> q_float = support::random_matrix<float>(L, d_k, 7);
  Mat<Bf16> out(L, d_v), small_out(10, d_v);
  Mat<float> out_float(L, d_v);
  attention::AttentionWorkspace<Bf16> workspace;
  attention::AttentionWorkspace<float> float_workspace;
  attention::scaled_dot_product_attention(q, k, v, out, workspace);  // size the workspaces
  attention::scaled_dot_product_attention(q_float, k, v, out_float, float_workspace);
  EXPECT_TRUE(allocates_nothing(allocations_in([&] {
    attention::scaled_dot_product_attention(q, k, v, out, workspace, attention::causal);
    attention::scaled_dot_product_attention(q.topRows(10), k.topRows(20), v.topRows(20), small_out,
                                            workspace);
    attention::scaled_dot_product_attention(q_float, k, v, out_float, float_workspace);
  })));
  const Mat<Bf16> expected = attention::scaled_dot_product_attention(q, k, v, attention::causal);
  EXPECT_TRUE(out == expected);
}

// The split-key decode path (one query against many keys), given its workspace.
TYPED_TEST(NoMalloc, DecodePathWithWorkspaceAllocatesNothing) {
  using Scalar = TypeParam;
  if constexpr (!attention::detail::flash::supported<Scalar>) {
    GTEST_SKIP() << "long double takes the materialising path";
  } else {
    const Index S = 700, d = 24;
    ASSERT_TRUE(attention::detail::flash::use_decode_path(1, S));
    const Mat<Scalar> q = support::random_matrix<Scalar>(2, d, 11);
    const Mat<Scalar> k = support::random_matrix<Scalar>(S, d, 12);
    const Mat<Scalar> v = support::random_matrix<Scalar>(S, d, 13);
    Mat<Scalar> out(2, d);
    attention::AttentionWorkspace<Scalar> workspace;
    attention::scaled_dot_product_attention(q, k, v, out, workspace);  // sizes the workspace
    EXPECT_TRUE(allocates_nothing(allocations_in([&] {
      attention::scaled_dot_product_attention(q, k, v, out, workspace);
      attention::scaled_dot_product_attention(q.topRows(1), k, v, out.topRows(1), workspace,
                                              attention::causal);
    })));
  }
}

// Attention over an int8 cache (cache_attention.hpp), given its workspace: read in place (2
// queries) and widened into the workspace (20 queries: more than the decode path takes).
TEST(NoMallocLowPrecision, CacheAttentionWithWorkspaceAllocatesNothing) {
  const Index S = 600, width = 32;
  attention::Int8KVCache cache(width, S, 16);
  cache.append(support::random_matrix<float>(S, width, 14),
               support::random_matrix<float>(S, width, 15));
  const Mat<float> q = support::random_matrix<float>(20, 4 * 16, 16);
  const attention::Heads heads(4, 2);
  Mat<float> out(20, 4 * 16);
  attention::AttentionWorkspace<float> workspace;
  const auto calls = [&] {
    for (const Index L : {Index{2}, Index{20}}) {
      attention::scaled_dot_product_attention(q.topRows(L), cache, heads, out.topRows(L),
                                              workspace);
    }
  };
  calls();  // sizes the workspace
  EXPECT_TRUE(allocates_nothing(allocations_in(calls)));
}

// A KV cache at steady state: a sliding window (one token in, one out) after the buffers have
// reached 2 x max_length rows, and a cache appended up to max_length after reserve().
TYPED_TEST(NoMalloc, KVCacheAtCapacityAllocatesNothing) {
  using Scalar = TypeParam;
  const Index width = 16, window = 20;
  const Mat<Scalar> k = support::random_matrix<Scalar>(4 * window, width, 9);
  attention::KVCache<Scalar> sliding(width, window);
  sliding.append(k.topRows(window), k.topRows(window));
  for (Index t = window; t < 2 * window; ++t) {  // grows to 2 x window rows
    sliding.drop_oldest(1);
    sliding.append(k.row(t), k.row(t));
  }
  ASSERT_EQ(sliding.capacity(), 2 * window);
  attention::KVCache<Scalar> growing(width, window);
  growing.reserve(window);
  const Allocations a = allocations_in([&] {
    for (Index t = 2 * window; t < 4 * window; ++t) {
      sliding.drop_oldest(1);
      sliding.append(k.row(t), k.row(t));
    }
    for (Index t = 0; t < window; ++t) {
      auto rows = growing.extend(1);
      rows.keys = k.row(t);
      rows.values = k.row(t);
    }
  });
  EXPECT_TRUE(allocates_nothing(a));
  EXPECT_EQ(sliding.keys(), k.bottomRows(window));
  EXPECT_EQ(growing.values(), k.topRows(window));
}

}  // namespace
