#pragma once
// SPDX-License-Identifier: MIT
// The message of an expected exception, for tests that check what an error says.

#include <string>
#include <utility>

namespace support {

/// The what() of the exception of type E that `f()` throws; "" if it throws none (an exception
/// of another type propagates, and fails the test).
template <typename E, typename F>
std::string message_of(F&& f) {
  try {
    std::forward<F>(f)();
  } catch (const E& e) {
    return e.what();
  }
  return "";
}

}  // namespace support
