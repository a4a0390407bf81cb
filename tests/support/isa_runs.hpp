#pragma once
// SPDX-License-Identifier: MIT
//
// For test executables that ctest runs once per instruction-set path with ATTENTION_ISA set
// (kernels_test, projection_test; tests/CMakeLists.txt): when the setting names a path this build
// or CPU cannot run, every test of the process is reported as skipped, rather than run again on
// the path the dispatch falls back to (which has its own run). Include it in one source file of
// the executable; the registration is an inline variable, made once per program.

#include <gtest/gtest.h>

#include <attention/isa.hpp>
#include <cstdlib>
#include <optional>

namespace support {

/// The path ATTENTION_ISA names (nullopt: unset, empty or "native").
inline std::optional<attention::Isa> requested_isa() {
  const char* setting = std::getenv("ATTENTION_ISA");
  return attention::detail::parse_isa(setting != nullptr ? setting : "");
}

/// Skips every test when ATTENTION_ISA names a path that is not available here.
class SkipUnavailableIsa : public ::testing::Environment {
 public:
  void SetUp() override {
    const std::optional<attention::Isa> isa = requested_isa();
    if (isa && !attention::isa_available(*isa)) {
      // GoogleTest 1.12 reports the tests of a process skipped in its environment as passed; the
      // marker makes ctest (gtest_discover_tests' SKIP_REGULAR_EXPRESSION) report them skipped.
      GTEST_SKIP() << "[  SKIPPED ] ATTENTION_ISA=" << attention::isa_name(*isa)
                   << ": this build or CPU cannot run that path";
    }
  }
};

inline ::testing::Environment* const skip_unavailable_isa =
    ::testing::AddGlobalTestEnvironment(new SkipUnavailableIsa);

}  // namespace support
