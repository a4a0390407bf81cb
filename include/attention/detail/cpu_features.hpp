#pragma once
// SPDX-License-Identifier: MIT
//
// Which instruction sets this CPU (and its operating system) can run, and which of the kernels'
// paths to take: the best one, or the one the environment variable ATTENTION_ISA asks for (issue
// 18), for kernels/dispatch.hpp; the public names are in attention/isa.hpp (active_isa()).
//
// Detection reads CPUID and, for the wider registers, XGETBV: a CPU may have AVX2 or AVX-512 while
// the operating system does not save the YMM / ZMM state on a context switch (an old kernel, a VM
// that hides it), and then the instructions must not be used. GCC's and clang's
// __builtin_cpu_supports do the same but do not know every name in every version (clang 14 has no
// "f16c"), and clang's bit layout for the newer names must match the libgcc it links; reading
// CPUID here gives one answer with both compilers. tests/kernels/simd_isa_test.cpp compares the
// two for every name the compiler knows.
//
// ATTENTION_ISA (read once per process, on the first call that dispatches):
//   baseline | avx2 | avx512   that path, if the CPU can run it; otherwise the best it can
//                              (IsaChoice::note says so)
//   native, or unset or empty  the best the CPU can run
//   anything else              an error, std::invalid_argument naming the value and the accepted
//                              ones, thrown by selected_isa() -- that is, from the first call of a
//                              dispatched function and from every later one, never at program
//                              start (a header library has no place to report an error there)
// Values are compared ignoring ASCII case ("AVX2" = "avx2").

#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#if defined(__x86_64__) && !defined(_MSC_VER) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define ATTENTION_DETAIL_HAS_CPUID 1
#else
#define ATTENTION_DETAIL_HAS_CPUID 0
#endif

namespace attention::detail {

/// The kernels' instruction-set paths, from the least to the most demanding.
enum class Isa {
  baseline,  ///< what the compiler's flags give (SSE2 on plain x86-64); runs everywhere
  avx2,      ///< AVX2 + FMA + F16C (x86-64-v3's vector part)
  avx512     ///< AVX-512 F, CD, BW, DQ, VL (x86-64-v4) + the avx2 set
};

/// The name ATTENTION_ISA accepts for the path.
[[nodiscard]] constexpr const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    default:
      return "baseline";
  }
}

/// Instruction-set extensions the CPU has and the operating system enables (a vector extension
/// whose register state the OS does not save reads as absent).
struct CpuFeatures {
  bool avx = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512cd = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512_bf16 = false;
};

/// Reads CPUID and XGETBV (all false off x86-64 or without GCC/clang). Prefer cpu_features().
[[nodiscard]] inline CpuFeatures detect_cpu_features() {
  CpuFeatures f;
#if ATTENTION_DETAIL_HAS_CPUID
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool has_fma = ecx & (1u << 12), osxsave = ecx & (1u << 27), has_avx = ecx & (1u << 28),
             has_f16c = ecx & (1u << 29);
  if (!osxsave) return f;  // XGETBV unavailable: the OS enables no state beyond SSE
  unsigned xcr0 = 0, xcr0_high = 0;
  __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
  const bool os_ymm = (xcr0 & 0x6u) == 0x6u;  // XCR0 bits 1, 2: XMM and YMM state
  const bool os_zmm =
      os_ymm && (xcr0 & 0xE0u) == 0xE0u;  // bits 5-7: opmask, ZMM0-15 high, ZMM16-31
  unsigned leaf7_ebx = 0, leaf7_1_eax = 0;
  if (__get_cpuid_max(0, nullptr) >= 7) {
    unsigned max_subleaf = 0;
    __cpuid_count(7, 0, max_subleaf, leaf7_ebx, ecx, edx);
    if (max_subleaf >= 1) __cpuid_count(7, 1, leaf7_1_eax, ebx, ecx, edx);
  }
  const auto bit = [](unsigned reg, int n) { return ((reg >> n) & 1u) != 0; };
  f.avx = has_avx && os_ymm;
  f.fma = f.avx && has_fma;
  f.f16c = f.avx && has_f16c;
  f.avx2 = f.avx && bit(leaf7_ebx, 5);
  f.avx512f = os_zmm && bit(leaf7_ebx, 16);
  f.avx512dq = f.avx512f && bit(leaf7_ebx, 17);
  f.avx512cd = f.avx512f && bit(leaf7_ebx, 28);
  f.avx512bw = f.avx512f && bit(leaf7_ebx, 30);
  f.avx512vl = f.avx512f && bit(leaf7_ebx, 31);
  f.avx512_bf16 = f.avx512f && bit(leaf7_1_eax, 5);
#endif
  return f;
}

/// This CPU's features, detected once (thread-safe).
[[nodiscard]] inline const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect_cpu_features();
  return features;
}

/// True if a CPU with `cpu` can run the path: every extension its target region
/// (kernels/target_regions.hpp) enables.
[[nodiscard]] constexpr bool can_run(Isa isa, const CpuFeatures& cpu) {
  const bool avx2_set = cpu.avx2 && cpu.fma && cpu.f16c;
  switch (isa) {
    case Isa::avx2:
      return avx2_set;
    case Isa::avx512:
      return avx2_set && cpu.avx512f && cpu.avx512cd && cpu.avx512bw && cpu.avx512dq &&
             cpu.avx512vl;
    default:
      return true;
  }
}

/// The most demanding path the CPU can run.
[[nodiscard]] constexpr Isa best_isa(const CpuFeatures& cpu) {
  if (can_run(Isa::avx512, cpu)) return Isa::avx512;
  if (can_run(Isa::avx2, cpu)) return Isa::avx2;
  return Isa::baseline;
}

/// Reads a value of ATTENTION_ISA: the path it names, or std::nullopt for "native" and "" (the
/// best the CPU can run). \throws std::invalid_argument naming the value and the accepted ones.
[[nodiscard]] inline std::optional<Isa> parse_isa(std::string_view value) {
  std::string lower(value);
  for (char& c : lower) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (lower.empty() || lower == "native") return std::nullopt;
  for (Isa isa : {Isa::baseline, Isa::avx2, Isa::avx512}) {
    if (lower == isa_name(isa)) return isa;
  }
  throw std::invalid_argument("attention: ATTENTION_ISA=\"" + std::string(value) +
                              "\" is not one of baseline, avx2, avx512, native (or empty)");
}

/// The path chosen for a process, and why.
struct IsaChoice {
  Isa isa = Isa::baseline;  ///< the path to run (meaningless when `error` is set)
  std::string setting;      ///< ATTENTION_ISA as read; empty when unset
  std::string note;         ///< set when the CPU cannot run the requested path
  std::string error;        ///< set when `setting` is not an accepted value
};

/// The path for ATTENTION_ISA = `setting` (nullptr: unset) on a CPU with `cpu`. Never throws: an
/// invalid setting is recorded in IsaChoice::error (see selected_isa()).
[[nodiscard]] inline IsaChoice choose_isa(const char* setting, const CpuFeatures& cpu) {
  IsaChoice choice;
  choice.setting = setting ? setting : "";
  choice.isa = best_isa(cpu);
  try {
    const std::optional<Isa> requested = parse_isa(choice.setting);
    if (requested && can_run(*requested, cpu)) {
      choice.isa = *requested;
    } else if (requested) {
      choice.note = std::string("attention: ATTENTION_ISA=") + choice.setting +
                    ": this CPU cannot run " + isa_name(*requested) + "; using " +
                    isa_name(choice.isa);
    }
  } catch (const std::invalid_argument& e) {
    choice.error = e.what();
  }
  return choice;
}

/// The choice for this process: ATTENTION_ISA and the CPU, read once (thread-safe).
[[nodiscard]] inline const IsaChoice& isa_choice() {
  static const IsaChoice choice = choose_isa(std::getenv("ATTENTION_ISA"), cpu_features());
  return choice;
}

/// The path the dispatcher runs. \throws std::invalid_argument if ATTENTION_ISA has a value that
/// is not accepted (the message names it and the accepted values), on every call.
[[nodiscard]] inline Isa selected_isa() {
  const IsaChoice& choice = isa_choice();
  if (!choice.error.empty()) throw std::invalid_argument(choice.error);
  return choice.isa;
}

}  // namespace attention::detail
