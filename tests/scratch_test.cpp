// SPDX-License-Identifier: MIT
// Tests for attention/scratch.hpp: the per-thread scratch that MultiHeadAttention (and the kernels)
// keep from one call to the next gives the same answers whatever an earlier call left in it, on
// any thread, and after release_scratch().

#include <gtest/gtest.h>

#include <attention/multi_head.hpp>
#include <attention/scratch.hpp>
#include <thread>

#include "support/eigen_matchers.hpp"
#include "support/layers.hpp"
#include "support/random.hpp"
#include "support/reference.hpp"

namespace scratch_test {
namespace {

namespace ref = support::reference;
using attention::Matrix;
using attention::MultiHeadAttention;
using RealMatrix = ref::Matrix;
using support::parameters_of;

TEST(MultiHeadAttention, ScratchReusedAcrossSizesThreadsAndRelease) {
  // The layer's temporaries live in per-thread scratch (attention/scratch.hpp) that grows to the
  // largest call and is reused: a large call, then smaller and wider ones (the buffers hold stale
  // rows of the earlier call), then release_scratch() and again, on this thread and on two others
  // at once, must each give the reference's rows. 136 queries take the projection's packed path.
  const MultiHeadAttention<float> layer = support::random_layer<float>(32, 4, 4, 2600);
  const MultiHeadAttention<float> wide = support::random_layer<float>(48, 3, 3, 2610);
  const Matrix<float> long_x = support::random_matrix<float>(136, 32, 2601);
  const Matrix<float> short_x = support::random_matrix<float>(9, 32, 2602);
  const Matrix<float> wide_x = support::random_matrix<float>(70, 48, 2603);
  const RealMatrix r_long = ref::to_real(long_x), r_short = ref::to_real(short_x),
                   r_wide = ref::to_real(wide_x);
  const RealMatrix expect_long =
      ref::multi_head(r_long, r_long, r_long, parameters_of(layer), ref::Mask::causal());
  const RealMatrix expect_short = ref::multi_head(r_short, r_long, r_long, parameters_of(layer));
  const RealMatrix expect_wide = ref::multi_head(r_wide, r_wide, r_wide, parameters_of(wide));
  const auto run_all = [&] {
    bool ok = support::is_near(layer.forward(long_x, attention::causal), expect_long,
                               support::tolerance<float>());
    ok = support::is_near(layer.forward(short_x, long_x, long_x), expect_short,
                          support::tolerance<float>()) &&
         ok;
    ok = support::is_near(wide.forward(wide_x), expect_wide, support::tolerance<float>()) && ok;
    return ok;
  };
  EXPECT_TRUE(run_all());
  EXPECT_TRUE(run_all());
  attention::release_scratch();
  EXPECT_TRUE(run_all());
  bool other_a = false, other_b = false;
  std::thread a([&] { other_a = run_all() && run_all(); });
  std::thread b([&] { other_b = run_all() && run_all(); });
  a.join();
  b.join();
  EXPECT_TRUE(other_a);
  EXPECT_TRUE(other_b);
}

}  // namespace
}  // namespace scratch_test
