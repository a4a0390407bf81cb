// SPDX-License-Identifier: MIT
// Tests for attention/version.hpp: its three numbers are the project's version, which CMake's
// project() declares and passes to this test as ATTENTION_TEST_PROJECT_VERSION_{MAJOR,MINOR,PATCH}
// (tests/CMakeLists.txt), so the header and the CMake package cannot drift apart.

#include <gtest/gtest.h>

#include <attention/version.hpp>

namespace version_test {
namespace {

TEST(Version, HeaderMatchesTheCMakeProject) {
  EXPECT_EQ(ATTENTION_VERSION_MAJOR, ATTENTION_TEST_PROJECT_VERSION_MAJOR);
  EXPECT_EQ(ATTENTION_VERSION_MINOR, ATTENTION_TEST_PROJECT_VERSION_MINOR);
  EXPECT_EQ(ATTENTION_VERSION_PATCH, ATTENTION_TEST_PROJECT_VERSION_PATCH);
}

}  // namespace
}  // namespace version_test
