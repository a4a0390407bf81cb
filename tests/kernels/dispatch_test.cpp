// SPDX-License-Identifier: MIT
//
// The run-time dispatch (kernels/dispatch.hpp, attention/isa.hpp): the path a process takes
// follows ATTENTION_ISA and the CPU, and the kernels' entry points run that path's copy of the
// kernels. ctest runs the tests of the dispatched entry points (Forward*, Decode*, Backward*, and
// these) once per path, with ATTENTION_ISA=baseline, avx2 and avx512 (tests/CMakeLists.txt): every
// path the CPU can run is then checked against the long-double reference and for thread-count
// determinism, and a run asking for a path the CPU cannot run is reported as skipped.

#include <gtest/gtest.h>

#include <attention/attention.hpp>
#include <optional>

#include "support/isa_runs.hpp"
#include "support/random.hpp"

namespace {

using attention::Index;
using attention::Isa;
namespace detail = attention::detail;
namespace kernels = attention::detail::kernels;

TEST(KernelDispatch, ActivePathIsTheRequestedOneOrTheBest) {
  Isa best = Isa::baseline;
  for (Isa isa : {Isa::avx2, Isa::avx512}) {
    if (attention::isa_available(isa)) best = isa;
  }
  const std::optional<Isa> requested = support::requested_isa();
  EXPECT_EQ(attention::active_isa(), requested ? *requested : best);
  // Stable: read once.
  EXPECT_EQ(attention::active_isa(), attention::active_isa());
}

TEST(KernelDispatch, PathsCarriedByThisBuild) {
  EXPECT_TRUE(attention::isa_available(Isa::baseline));
#if ATTENTION_HAS_DISPATCH
  EXPECT_EQ(attention::isa_available(Isa::avx2),
            detail::can_run(Isa::avx2, detail::cpu_features()));
  EXPECT_EQ(attention::isa_available(Isa::avx512),
            detail::can_run(Isa::avx512, detail::cpu_features()));
#else
  EXPECT_FALSE(attention::isa_available(Isa::avx2));
  EXPECT_FALSE(attention::isa_available(Isa::avx512));
#endif
  EXPECT_STREQ(attention::isa_name(Isa::avx2), "avx2");
}

/// The forward of `heads` through `run`, into fresh outputs.
template <typename Scalar, typename Run>
attention::Matrix<Scalar> forward_through(const attention::Matrix<Scalar>& q,
                                          const attention::Matrix<Scalar>& k,
                                          const attention::Matrix<Scalar>& v, Run run) {
  attention::Matrix<Scalar> out(q.rows(), v.cols());
  const kernels::HeadOperands<Scalar> head{q.data(), q.cols(),   k.data(),   k.cols(), v.data(),
                                           v.cols(), out.data(), out.cols(), nullptr};
  kernels::CallWorkspace<Scalar> workspace;
  run(&head, kernels::ScoreRules<Scalar>{Scalar(0.125)}, workspace);
  return out;
}

// The entry point runs the active path's copy: its output is bitwise that of the copy called by
// name (and, on a path other than the baseline, the paths differ somewhere in the last bits: a
// dispatcher that always ran the baseline would fail one of the two).
TEST(KernelDispatch, EntryPointRunsTheActivePathsKernels) {
  using Scalar = float;
  const Index L = 100, S = 300, d = 40;
  const auto q = support::random_matrix<Scalar>(L, d, 11);
  const auto k = support::random_matrix<Scalar>(S, d, 12);
  const auto v = support::random_matrix<Scalar>(S, d, 13);
  const attention::NoMask mask;
  const auto dispatched = forward_through(q, k, v, [&](auto* head, auto rules, auto& ws) {
    kernels::multi_head_attention(head, 1, L, S, d, d, rules, mask, ws);
  });
  const auto baseline = forward_through(q, k, v, [&](auto* head, auto rules, auto& ws) {
    kernels::baseline::forward_heads(head, 1, L, S, d, d, rules, mask, ws);
  });
  switch (attention::active_isa()) {
    case Isa::baseline:
      EXPECT_EQ(dispatched, baseline);
      break;
#if ATTENTION_HAS_DISPATCH
    case Isa::avx2: {
      const auto avx2 = forward_through(q, k, v, [&](auto* head, auto rules, auto& ws) {
        kernels::avx2::forward_heads(head, 1, L, S, d, d, rules, mask, ws);
      });
      EXPECT_EQ(dispatched, avx2);
      EXPECT_NE(dispatched, baseline);
      break;
    }
    case Isa::avx512: {
      const auto avx512 = forward_through(q, k, v, [&](auto* head, auto rules, auto& ws) {
        kernels::avx512::forward_heads(head, 1, L, S, d, d, rules, mask, ws);
      });
      EXPECT_EQ(dispatched, avx512);
      EXPECT_NE(dispatched, baseline);
      break;
    }
#endif
    default:
      FAIL() << "no such path in this build: " << attention::isa_name(attention::active_isa());
  }
}

}  // namespace
