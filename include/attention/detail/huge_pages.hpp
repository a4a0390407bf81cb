#pragma once
// SPDX-License-Identifier: MIT
//
// Transparent huge pages for large buffers (Linux): madvise(MADV_HUGEPAGE) on the whole 2 MiB
// pages inside a buffer. A buffer read or first touched page by page pays a page walk or a fault
// per 4 KiB page; a 2 MiB page costs one for 512 of them. Used by the KV caches (kv_cache.hpp:
// a decoder step reads every cached row) and the kernels' scratch buffers (kernels/workspace.hpp:
// a call's first touch of its scratch). Advice only: on other systems, or where the kernel
// declines ("never" in /sys/kernel/mm/transparent_hugepage/enabled), nothing changes, and the
// contents and every result are the same either way.

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace attention::detail {

/// Bytes of an x86-64 huge page.
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

/// Advises the whole huge pages inside [data, data + bytes): those that start at or after data
/// and end at or before its end (none when the buffer holds no whole one).
inline void advise_huge_pages([[maybe_unused]] void* data, [[maybe_unused]] std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  char* const first = static_cast<char*>(data);
  const std::size_t misalignment = reinterpret_cast<std::uintptr_t>(first) % huge_page_bytes;
  const std::size_t skip = misalignment == 0 ? 0 : huge_page_bytes - misalignment;
  if (bytes < skip + huge_page_bytes) return;
  const std::size_t length = (bytes - skip) / huge_page_bytes * huge_page_bytes;
  (void)madvise(first + skip, length, MADV_HUGEPAGE);  // advice: a refusal changes nothing
#endif
}

}  // namespace attention::detail
