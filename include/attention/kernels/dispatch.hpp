#pragma once
// SPDX-License-Identifier: MIT
//
// The run-time choice among the kernels' paths (issue 18). Every ISA-dependent kernel body is
// compiled once per path (for_each_isa.inc): kernels::baseline for the compiler's flags on Eigen's
// packets, and, where ATTENTION_HAS_DISPATCH (GCC or clang on x86-64, unless the user defines
// ATTENTION_NO_DISPATCH), kernels::avx2 and kernels::avx512 inside target regions. The entry points
// of the kernels (multi_head_attention, decode_attention, attention_backward, ...) call one of them
// through ATTENTION_DISPATCH: the path detail::selected_isa() names -- the best one the CPU runs,
// or the one the environment variable ATTENTION_ISA asks for, both read once per process
// (detail/cpu_features.hpp). A switch on that cached value costs a few instructions per call. The
// entry points pass the bodies the mask as a MaskRef (mask_ref.hpp), so each body is compiled once
// per scalar type and path, whatever the number of mask types a program uses.
//
// Types other than float and double always take the baseline path (their Simd is scalar).

#include "attention/detail/cpu_features.hpp"
#include "attention/kernels/simd.hpp"
#include "attention/kernels/target_regions.hpp"

namespace attention::detail::kernels {

/// The path the dispatched kernels take in this process: selected_isa() where
/// ATTENTION_HAS_DISPATCH, else Isa::baseline (ATTENTION_ISA is then not read). \throws
/// std::invalid_argument if ATTENTION_ISA holds a value that is not accepted.
[[nodiscard]] inline Isa active_path() {
#if ATTENTION_HAS_DISPATCH
  return selected_isa();
#else
  return Isa::baseline;
#endif
}

}  // namespace attention::detail::kernels

/// ATTENTION_DISPATCH(Scalar, function, args...): `return <path>::function(args...);` for the path
/// of active_path(), kernels::baseline's for a Scalar other than float and double. Used as the
/// whole body of a kernel entry point; `function` must deduce its template arguments.
#if ATTENTION_HAS_DISPATCH
#define ATTENTION_DISPATCH(Scalar, function, ...)                             \
  do {                                                                        \
    if constexpr (::attention::detail::kernels::supported<Scalar>) {          \
      switch (::attention::detail::kernels::active_path()) {                  \
        case ::attention::detail::Isa::avx512:                                \
          return ::attention::detail::kernels::avx512::function(__VA_ARGS__); \
        case ::attention::detail::Isa::avx2:                                  \
          return ::attention::detail::kernels::avx2::function(__VA_ARGS__);   \
        case ::attention::detail::Isa::baseline:                              \
          break;                                                              \
      }                                                                       \
    }                                                                         \
    return ::attention::detail::kernels::baseline::function(__VA_ARGS__);     \
  } while (false)
#else
#define ATTENTION_DISPATCH(Scalar, function, ...) \
  return ::attention::detail::kernels::baseline::function(__VA_ARGS__)
#endif
