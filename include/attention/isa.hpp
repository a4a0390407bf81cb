#pragma once
// SPDX-License-Identifier: MIT
//
// Which instruction set the float and double kernels run on (issue 18). The tiled forward, decode
// and the tiled backward are compiled for three paths in every program that includes them:
//   baseline   for the compiler's flags, on Eigen's packets (SSE2 under plain -O2 on x86-64;
//              NEON on aarch64; whatever -march enables)
//   avx2       AVX2 + FMA (+ F16C), whatever the flags          } GCC and clang on x86-64,
//   avx512     AVX-512 F/CD/BW/DQ/VL + the avx2 set, likewise   } unless ATTENTION_NO_DISPATCH
// and the first call picks the best path the CPU (and its operating system) can run. The
// environment variable ATTENTION_ISA, read once per process on that first call, forces a path
// (`ATTENTION_ISA=avx2`: AVX2 even on an AVX-512 machine; `baseline`: neither; `native` or empty:
// the best). A path the CPU cannot run falls back to the best one it can; a value that is not
// one of these makes every dispatched call throw std::invalid_argument naming it. Defining
// ATTENTION_NO_DISPATCH (the CMake option of the same name sets it on the attention target; it
// must be the same in every translation unit of a program) compiles the baseline path only, for
// compilers without target attributes (MSVC) or for builds that want only what their flags allow.
//
// The paths compute the same formulas in the same order; they round differently in the last bits
// (their exp() and tanh(), vector widths, FMA or not), each within the accuracy the tests assert
// against a long-double reference. On one path, results do not depend on the thread count.

#include "attention/detail/cpu_features.hpp"
#include "attention/kernels/dispatch.hpp"

namespace attention {

/// The kernels' instruction-set paths (see the top of this file): baseline, avx2, avx512.
using Isa = detail::Isa;

/// The path's name as ATTENTION_ISA spells it: "baseline", "avx2" or "avx512".
using detail::isa_name;

/// The path the float and double kernels take in this process: the best one this CPU runs, or the
/// one ATTENTION_ISA asks for (read once). Isa::baseline under ATTENTION_NO_DISPATCH or where there
/// is no dispatch (not x86-64, not GCC or clang). \throws std::invalid_argument if ATTENTION_ISA
/// holds a value that is not accepted.
[[nodiscard]] inline Isa active_isa() { return detail::kernels::active_path(); }

/// True if this build carries the path and this CPU can run it: ATTENTION_ISA=isa_name(isa) then
/// makes active_isa() return it.
[[nodiscard]] inline bool isa_available(Isa isa) {
  if (isa == Isa::baseline) return true;
  return ATTENTION_HAS_DISPATCH && detail::can_run(isa, detail::cpu_features());
}

}  // namespace attention
