// SPDX-License-Identifier: MIT
//
// One decoder step: a new token's 32 query heads attend over S cached tokens of 8 K/V heads
// (grouped-query attention, 4 query heads per K/V head), head_dim 128, float, the keys and values
// in an attention::KVCache. This is memory-bound: each step reads all of K and V once
// (2 x S x 8 x 128 x 4 bytes: 32 MiB at S = 4096, 256 MiB at S = 32768), and does ~4 FLOPs per
// byte-pair of it. So the counters are bytes/s of K and V read, and
//   bandwidth_fraction  bytes/s over the copy bandwidth of the same thread count, measured at start
//                       as BM_MemoryCopy measures it (issue 4's target: 0.7 or more, 2 threads)
//   read_fraction       bytes/s over the read bandwidth of the same thread count, measured at start
//                       as BM_MemoryRead measures it
// A decoder's step reads every layer's cache once, so a layer's K and V are long gone from the
// caches when its next step comes. The benchmarks cycle through several layers' caches (256 MiB or
// more in all) to match: with one cache, the 32 MiB of S = 4096 were partly found in the 32 MiB L3
// from the previous iteration, and the step ran above the copy bandwidth.
//   BM_DecodeGrouped  all heads in one call, scaled_dot_product_attention(q, keys, values,
//                     attention::Heads{32, 8}, out, workspace): the split-key decode path, the 4
//                     query heads of a group reading their K/V head together
//   BM_DecodePerHead  the public scaled_dot_product_attention once per query head on column views
//                     of the cache: K and V read 4 times, once per head of a group
//   BM_MemoryCopy     std::memcpy of a 512 MiB array into another, split among the threads; counts
//                     the bytes read and the bytes written, 2 x 512 MiB. At 256 MiB or more per
//                     thread glibc's memcpy (2.36 here) writes with non-temporal stores, which do
//                     not read the destination first, so that is the memory traffic.
//   BM_MemoryRead     a sum over a 512 MiB float array, split among the threads; counts the bytes
//                     read. A decode step only reads.
// The two differ: on the project's machine (2 Zen 4 cores of a VM) 2 threads copied at ~37 GB/s
// (read + write) but read at ~28 GB/s; one thread did ~21 and ~18. A core's reads are limited by
// the cache-line misses it keeps in flight, while non-temporal writes are posted and leave those
// slots to the reads (so we think; the counters are not visible in the VM). Reading alone then
// tops out near 0.75 of the copy figure: 0.7 of copy asks for ~0.95 of the read bandwidth.
//
// Prefill through the cache: a prompt of N = 4096 tokens into one MultiHeadAttention<float> layer
// (d_model 1024, 8 query heads / 2 K/V heads of head_dim 128), two ways:
//   BM_PrefillChunked  chunks of 512 tokens, each forward(x_new, cache): project the chunk, append
//                      its K and V to the KVCache, attend lower-right causal over the cache
//   BM_PrefillOneCall  one forward(x, attention::causal) over the N tokens, no cache
// Both do the same useful work, counted as GFLOP/s: the projections, 2 N d_model (2 d_model +
// 2 kv_dim), and causal attention, 2 N^2 d_model (half of 4 N^2 head_dim per query head). Chunk
// c's queries see the 512 c cached keys in full and their own chunk causally, so the kernel skips
// the same tiles as one causal call; the target is chunked within 10% of one call. Chunking runs
// 8 times as many parallel regions: on a machine shared with other busy processes, run with
// OMP_WAIT_POLICY=passive, or threads spinning at each region's barrier take the cores from the
// threads still working and the chunked run pays for it 8 times over.
//
// A decoder layer's step through each kind of cache (issue 13): one new token into a
// MultiHeadAttention<float> of the decode shape above (d_model 4096 = 32 heads of 128, 8 K/V heads)
// whose cache holds S tokens, layer.forward(x_new, cache): project the token, append its key and
// value to the cache, attend over all S + 1 cached tokens, project the heads' outputs. One
// benchmark per cache, run one after the other at each S and thread count:
//   BM_DecodeLayer<KVCache<float>>            4 bytes per cached entry
//   BM_DecodeLayer<KVCache<Eigen::bfloat16>>  2 bytes (widened in registers)
//   BM_DecodeLayer<Int8KVCache>               1 byte, plus a float scale per 128 (group = head)
// Counters: tokens/s (steps per second), bytes/s of what a step reads (the layer's four weight
// matrices, 160 MiB of float, and the cache's K and V), and bandwidth_fraction over the copy
// bandwidth as above. The weights are the same for all three, so the speedup of a smaller cache
// is diluted by them: the attention's own share of a step is the step's time minus that of
// BM_DecodeLayerWeightsOnly (the same layer over a cache of one token).
//
// Attention alone over each kind of cache (issue 13's decode targets): the step's 32 query heads
// over S cached tokens, scaled_dot_product_attention(q, cache, attention::Heads{32, 8}, out,
// workspace), nothing projected; one benchmark per cache, one after the other at each S and thread
// count, so that their ratios compare neighbours in time:
//   BM_DecodeCache<KVCache<float>>            4 bytes per cached entry
//   BM_DecodeCache<KVCache<Eigen::bfloat16>>  2 bytes, widened in registers (target: 1.8x float's
//   BM_DecodeCache<KVCache<Eigen::half>>      2 bytes                        tokens/s)
//   BM_DecodeCache<Int8KVCache>               1 byte plus a float scale per group of 128 (a head;
//                                             target: 3x float's tokens/s)
// Counters: tokens/s, bytes/s of the cache's K and V (and scales) that a step reads, and
// bandwidth_fraction over the copy bandwidth as above (target: 0.75 for each).
// Arg `threads` sets OpenMP's and Eigen's thread count.

#include <algorithm>
#include <attention/attention.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "bench_support.hpp"

namespace {

using attention::Index;
using attention::Matrix;

constexpr Index num_heads = 32, num_kv_heads = 8, head_dim = 128;
constexpr Index heads_per_kv = num_heads / num_kv_heads;

/// Bytes of K and V a step reads.
double kv_bytes(Index seq_len) {
  return 2.0 * static_cast<double>(seq_len) * num_kv_heads * head_dim * sizeof(float);
}

/// Copies `bytes` from src to dst on `threads` threads, each its own contiguous slice.
void parallel_copy(char* dst, const char* src, std::size_t bytes, int threads) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
  for (int t = 0; t < threads; ++t) {
    const std::size_t begin =
        bytes / static_cast<std::size_t>(threads) * static_cast<std::size_t>(t);
    const std::size_t end = t == threads - 1 ? bytes
                                             : bytes / static_cast<std::size_t>(threads) *
                                                   static_cast<std::size_t>(t + 1);
    std::memcpy(dst + begin, src + begin, end - begin);
  }
}

constexpr std::size_t copy_bytes = std::size_t(512) << 20;

/// Sums the floats of `src` on `threads` threads, each its own contiguous slice; returns the sum
/// of the slices' sums.
float parallel_sum(const Eigen::ArrayXf& src, int threads) {
  const Index count = src.size();
  std::vector<float> sums(static_cast<std::size_t>(threads));
#if defined(_OPENMP)
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
  for (int t = 0; t < threads; ++t) {
    const Index begin = count / threads * t;
    const Index end = t == threads - 1 ? count : count / threads * (t + 1);
    sums[static_cast<std::size_t>(t)] = src.segment(begin, end - begin).sum();
  }
  float total = 0;
  for (const float s : sums) total += s;
  return total;
}

/// Copy bandwidth (read + write bytes per second) and read bandwidth (bytes read per second) with
/// `threads` threads: best of 5 copies of a 512 MiB array and best of 5 sums over one, measured
/// once per thread count and cached.
struct Bandwidth {
  double copy = 0, read = 0;
};
const Bandwidth& bandwidth(int threads) {
  static std::vector<Bandwidth> cached(8);
  Bandwidth& best = cached[static_cast<std::size_t>(threads)];
  if (best.copy > 0) return best;
  std::vector<char> src(copy_bytes, 1), dst(copy_bytes, 0);
  for (int trial = 0; trial < 5; ++trial) {
    const support::LoopClock clock;
    parallel_copy(dst.data(), src.data(), copy_bytes, threads);
    benchmark::DoNotOptimize(dst.data());
    best.copy = std::max(best.copy, 2.0 * static_cast<double>(copy_bytes) / clock.seconds());
  }
  const Eigen::ArrayXf floats = Eigen::ArrayXf::Constant(copy_bytes / sizeof(float), 1.0F);
  for (int trial = 0; trial < 5; ++trial) {
    const support::LoopClock clock;
    benchmark::DoNotOptimize(parallel_sum(floats, threads));
    best.read = std::max(best.read, static_cast<double>(copy_bytes) / clock.seconds());
  }
  return best;
}

/// bytes/s, and bandwidth_fraction: bytes/s over the copy bandwidth of the same thread count.
/// With `read_fraction`, also bytes/s over the read bandwidth.
void set_byte_counters(benchmark::State& state, double bytes, int threads,
                       const support::LoopClock& clock, bool read_fraction = false) {
  using benchmark::Counter;
  const double rate = bytes * static_cast<double>(state.iterations()) / clock.seconds();
  state.counters["bytes/s"] = Counter(bytes, Counter::kIsIterationInvariantRate);
  state.counters["bandwidth_fraction"] = rate / bandwidth(threads).copy;
  if (read_fraction) state.counters["read_fraction"] = rate / bandwidth(threads).read;
}

/// Bytes of K and V that a decode benchmark cycles through, at least: several layers' caches
/// (as a decoder's step reads every layer's once), far more than a last-level cache, so that each
/// step reads its K and V from memory rather than finding the previous iteration's in the L3.
constexpr double decode_footprint = 256.0 * (1 << 20);

/// Bytes of K and V a step reads from a cache of seq_len tokens, and the cache of that kind.
template <typename Cache>
struct CacheKind;
template <>
struct CacheKind<attention::KVCache<float>> {
  static double bytes(Index seq_len) { return kv_bytes(seq_len); }
  static attention::KVCache<float> make(Index width, Index max_length) {
    return {width, max_length, max_length};
  }
};
template <>
struct CacheKind<attention::KVCache<Eigen::bfloat16>> {
  static double bytes(Index seq_len) { return kv_bytes(seq_len) / 2; }
  static attention::KVCache<Eigen::bfloat16> make(Index width, Index max_length) {
    return {width, max_length, max_length};
  }
};
template <>
struct CacheKind<attention::KVCache<Eigen::half>> {
  static double bytes(Index seq_len) { return kv_bytes(seq_len) / 2; }
  static attention::KVCache<Eigen::half> make(Index width, Index max_length) {
    return {width, max_length, max_length};
  }
};
template <>
struct CacheKind<attention::Int8KVCache> {
  static double bytes(Index seq_len) {
    return kv_bytes(seq_len) / 4 * (1.0 + 4.0 / static_cast<double>(head_dim));
  }
  static attention::Int8KVCache make(Index width, Index max_length) {
    return {width, max_length, head_dim, max_length};
  }
};

/// The caches of enough decoder layers to fill decode_footprint (the same keys and values in
/// each), one query token and its output.
template <typename Cache = attention::KVCache<float>>
struct Step {
  std::vector<Cache> caches;
  Matrix<float> q, out;
  explicit Step(Index seq_len)
      : q(support::random_matrix<float>(1, num_heads * head_dim, 1)), out(1, num_heads * head_dim) {
    const auto layers =
        static_cast<std::size_t>(std::ceil(decode_footprint / CacheKind<Cache>::bytes(seq_len)));
    const Matrix<float> k = support::random_matrix<float>(seq_len, num_kv_heads * head_dim, 2);
    const Matrix<float> v = support::random_matrix<float>(seq_len, num_kv_heads * head_dim, 3);
    for (std::size_t layer = 0; layer < layers; ++layer) {
      caches.push_back(CacheKind<Cache>::make(num_kv_heads * head_dim, seq_len));
      caches.back().append(k, v);
    }
  }
};

void BM_DecodeGrouped(benchmark::State& state) {
  const Index seq_len = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  support::set_threads(threads);
  Step<> step(seq_len);
  attention::AttentionWorkspace<float> workspace;
  const attention::Heads heads(num_heads, num_kv_heads);
  std::size_t layer = 0;
  const support::LoopClock clock;
  for (auto _ : state) {
    const attention::KVCache<float>& cache = step.caches[layer];
    attention::scaled_dot_product_attention(step.q, cache.keys(), cache.values(), heads, step.out,
                                            workspace);
    layer = (layer + 1) % step.caches.size();
    benchmark::DoNotOptimize(step.out.data());
    benchmark::ClobberMemory();
  }
  set_byte_counters(state, kv_bytes(seq_len), threads, clock, true);
}

void BM_DecodePerHead(benchmark::State& state) {
  const Index seq_len = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  support::set_threads(threads);
  Step<> step(seq_len);
  attention::AttentionWorkspace<float> workspace;
  std::size_t layer = 0;
  const support::LoopClock clock;
  for (auto _ : state) {
    const auto keys = step.caches[layer].keys();
    const auto values = step.caches[layer].values();
    for (Index h = 0; h < num_heads; ++h) {
      const Index g = h / heads_per_kv;
      attention::scaled_dot_product_attention(
          step.q.middleCols(h * head_dim, head_dim), keys.middleCols(g * head_dim, head_dim),
          values.middleCols(g * head_dim, head_dim), step.out.middleCols(h * head_dim, head_dim),
          workspace);
    }
    layer = (layer + 1) % step.caches.size();
    benchmark::DoNotOptimize(step.out.data());
    benchmark::ClobberMemory();
  }
  // Counted as the bytes a step needs (K and V once), so the ratio to BM_DecodeGrouped is the
  // speed ratio.
  set_byte_counters(state, kv_bytes(seq_len), threads, clock, true);
}

void BM_MemoryCopy(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  support::set_threads(threads);
  std::vector<char> src(copy_bytes, 1), dst(copy_bytes, 0);
  const support::LoopClock clock;
  for (auto _ : state) {
    parallel_copy(dst.data(), src.data(), copy_bytes, threads);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  set_byte_counters(state, 2.0 * static_cast<double>(copy_bytes), threads, clock);
}

/// Sums a 512 MiB float array on `threads` threads, each its own contiguous slice: reading alone,
/// as a decode step does. Counts the bytes read.
void BM_MemoryRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  support::set_threads(threads);
  const Eigen::ArrayXf src = Eigen::ArrayXf::Constant(copy_bytes / sizeof(float), 1.0F);
  const support::LoopClock clock;
  for (auto _ : state) {
    benchmark::DoNotOptimize(parallel_sum(src, threads));
    benchmark::ClobberMemory();
  }
  set_byte_counters(state, static_cast<double>(copy_bytes), threads, clock);
}

/// The decode layer (see the top of this file), with random weights.
const attention::MultiHeadAttention<float>& decode_layer() {
  static const attention::MultiHeadAttention<float> layer = [] {
    attention::MultiHeadAttention<float> l(num_heads * head_dim, num_heads, num_kv_heads);
    l.reset_parameters(11);
    return l;
  }();
  return layer;
}

/// Bytes of the layer's weights that every step reads.
double weight_bytes() {
  const attention::MultiHeadAttention<float>& layer = decode_layer();
  return static_cast<double>(layer.w_q.size() + layer.w_k.size() + layer.w_v.size() +
                             layer.w_o.size()) *
         sizeof(float);
}

/// Times decode_layer()'s steps on x through `cache` (each appends a token and then drops the
/// oldest), with tokens/s and the byte counters for `bytes` read per step.
template <typename Cache>
void time_steps(benchmark::State& state, const Matrix<float>& x, Cache& cache, int threads,
                double bytes) {
  const attention::MultiHeadAttention<float>& layer = decode_layer();
  Matrix<float> out(1, layer.d_model());
  const support::LoopClock clock;
  for (auto _ : state) {
    out = layer.forward(x, cache);
    cache.drop_oldest(1);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  set_byte_counters(state, bytes, threads, clock);
}

template <typename Cache>
void BM_DecodeLayer(benchmark::State& state) {
  const Index seq_len = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  support::set_threads(threads);
  const attention::MultiHeadAttention<float>& layer = decode_layer();
  const Index width = layer.kv_dim();
  // Room for S + 1 tokens; each step appends one and then drops the oldest, so S stay cached.
  Cache cache = CacheKind<Cache>::make(width, seq_len + 1);
  {
    const Matrix<float> k = support::random_matrix<float>(seq_len, width, 2);
    const Matrix<float> v = support::random_matrix<float>(seq_len, width, 3);
    cache.append(k, v);
  }
  const Matrix<float> x = support::random_matrix<float>(1, layer.d_model(), 4);
  Matrix<float> out(1, layer.d_model());
  // Two steps untimed: the first drop makes the cache grow once to 2 (S + 1) rows (KVCache's
  // policy for a cache that drops), after which S steps run without moving a row.
  for (int warm = 0; warm < 2; ++warm) {
    out = layer.forward(x, cache);
    cache.drop_oldest(1);
  }
  time_steps(state, x, cache, threads, weight_bytes() + CacheKind<Cache>::bytes(seq_len + 1));
}

/// The layer's step over a cache of one token: the projections alone, to a few microseconds.
void BM_DecodeLayerWeightsOnly(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  support::set_threads(threads);
  const attention::MultiHeadAttention<float>& layer = decode_layer();
  attention::KVCache<float> cache(layer.kv_dim(), 2, 2);
  const Matrix<float> x = support::random_matrix<float>(1, layer.d_model(), 4);
  Matrix<float> out(1, layer.d_model());
  out = layer.forward(x, cache);
  time_steps(state, x, cache, threads, weight_bytes());
}

/// Attention alone over a cache of S tokens of each kind: the new token's 32 query heads (float)
/// over the cache's 8 K/V heads, scaled_dot_product_attention(q, cache, attention::Heads{32, 8},
/// out, workspace), cycling through several layers' caches as BM_DecodeGrouped does (see the top
/// of this file), so that K and V come from memory.
template <typename Cache>
void BM_DecodeCache(benchmark::State& state) {
  const Index seq_len = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  support::set_threads(threads);
  Step<Cache> step(seq_len);
  attention::AttentionWorkspace<float> workspace;
  const attention::Heads heads(num_heads, num_kv_heads);
  attention::scaled_dot_product_attention(step.q, step.caches[0], heads, step.out,
                                          workspace);  // sizes buffers
  std::size_t layer = 0;
  const support::LoopClock clock;
  for (auto _ : state) {
    attention::scaled_dot_product_attention(step.q, step.caches[layer], heads, step.out, workspace);
    layer = (layer + 1) % step.caches.size();
    benchmark::DoNotOptimize(step.out.data());
    benchmark::ClobberMemory();
  }
  state.counters["tokens/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
  set_byte_counters(state, CacheKind<Cache>::bytes(seq_len), threads, clock);
}

constexpr Index prefill_d_model = 1024, prefill_heads = 8, prefill_kv_heads = 2;

/// Useful FLOPs of a causal self-attention layer over n tokens (see the top of this file).
double prefill_flops(const attention::MultiHeadAttention<float>& layer, Index n) {
  const double tokens = static_cast<double>(n), d = static_cast<double>(layer.d_model());
  const double kv = static_cast<double>(layer.kv_dim());
  return 2.0 * tokens * d * (2.0 * d + 2.0 * kv) + 2.0 * tokens * tokens * d;
}

attention::MultiHeadAttention<float> prefill_layer() {
  attention::MultiHeadAttention<float> layer(prefill_d_model, prefill_heads, prefill_kv_heads);
  layer.reset_parameters(7);
  return layer;
}

void BM_PrefillChunked(benchmark::State& state) {
  const Index seq_len = state.range(0), chunk = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  support::set_threads(threads);
  const attention::MultiHeadAttention<float> layer = prefill_layer();
  const Matrix<float> x = support::random_matrix<float>(seq_len, prefill_d_model, 1);
  Matrix<float> out(seq_len, prefill_d_model);
  // Room for the whole prompt up front, as a server sizes its cache: no reallocation while timed.
  attention::KVCache<float> cache(layer.kv_dim(), seq_len, seq_len);
  const support::LoopClock clock;
  for (auto _ : state) {
    cache.clear();
    for (Index first = 0; first < seq_len; first += chunk) {
      const Index rows = std::min(chunk, seq_len - first);
      out.middleRows(first, rows) = layer.forward(x.middleRows(first, rows), cache);
    }
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<float>(state, prefill_flops(layer, seq_len), threads, clock);
}

void BM_PrefillOneCall(benchmark::State& state) {
  const Index seq_len = state.range(0);
  const int threads = static_cast<int>(state.range(1));
  support::set_threads(threads);
  const attention::MultiHeadAttention<float> layer = prefill_layer();
  const Matrix<float> x = support::random_matrix<float>(seq_len, prefill_d_model, 1);
  Matrix<float> out(seq_len, prefill_d_model);
  const support::LoopClock clock;
  for (auto _ : state) {
    out = layer.forward(x, attention::causal);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  support::set_flop_counters<float>(state, prefill_flops(layer, seq_len), threads, clock);
}

// Names carry the shapes, e.g. BM_DecodeGrouped/seq:32768/threads:2/real_time.
const bool registered = [] {
  for (const auto& [name, function] : {std::pair{"BM_DecodeGrouped", BM_DecodeGrouped},
                                       std::pair{"BM_DecodePerHead", BM_DecodePerHead}}) {
    benchmark::RegisterBenchmark(name, function)
        ->ArgNames({"seq", "threads"})
        ->ArgsProduct({{4096, 32768}, support::thread_counts()})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  for (const auto& [name, function] :
       {std::pair{"BM_MemoryCopy", BM_MemoryCopy}, std::pair{"BM_MemoryRead", BM_MemoryRead}}) {
    benchmark::RegisterBenchmark(name, function)
        ->ArgNames({"threads"})
        ->ArgsProduct({support::thread_counts()})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  // The caches one after the other at each S and thread count, so that a ratio compares
  // neighbours in time.
  for (const int64_t threads : support::thread_counts()) {
    benchmark::RegisterBenchmark("BM_DecodeLayerWeightsOnly", BM_DecodeLayerWeightsOnly)
        ->ArgNames({"threads"})
        ->Args({threads})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    for (const int64_t seq_len : {int64_t{4096}, int64_t{32768}}) {
      using attention::KVCache;
      for (const auto& [name, function] :
           {std::pair{"BM_DecodeLayer<KVCache<float>>", BM_DecodeLayer<KVCache<float>>},
            std::pair{"BM_DecodeLayer<KVCache<Eigen::bfloat16>>",
                      BM_DecodeLayer<KVCache<Eigen::bfloat16>>},
            std::pair{"BM_DecodeLayer<Int8KVCache>", BM_DecodeLayer<attention::Int8KVCache>}}) {
        benchmark::RegisterBenchmark(name, function)
            ->ArgNames({"seq", "threads"})
            ->Args({seq_len, threads})
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  // Attention over each kind of cache, one after the other at each S and thread count.
  for (const int64_t threads : support::thread_counts()) {
    for (const int64_t seq_len : {int64_t{4096}, int64_t{32768}}) {
      using attention::KVCache;
      for (const auto& [name, function] :
           {std::pair{"BM_DecodeCache<KVCache<float>>", BM_DecodeCache<KVCache<float>>},
            std::pair{"BM_DecodeCache<KVCache<Eigen::bfloat16>>",
                      BM_DecodeCache<KVCache<Eigen::bfloat16>>},
            std::pair{"BM_DecodeCache<KVCache<Eigen::half>>", BM_DecodeCache<KVCache<Eigen::half>>},
            std::pair{"BM_DecodeCache<Int8KVCache>", BM_DecodeCache<attention::Int8KVCache>}}) {
        benchmark::RegisterBenchmark(name, function)
            ->ArgNames({"seq", "threads"})
            ->Args({seq_len, threads})
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
      }
    }
  }
  // Run one after the other at each thread count, so that a ratio compares neighbours in time.
  for (const int64_t threads : support::thread_counts()) {
    benchmark::RegisterBenchmark("BM_PrefillChunked", BM_PrefillChunked)
        ->ArgNames({"seq", "chunk", "threads"})
        ->Args({4096, 512, threads})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark("BM_PrefillOneCall", BM_PrefillOneCall)
        ->ArgNames({"seq", "threads"})
        ->Args({4096, threads})
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  }
  return true;
}();

}  // namespace

int main(int argc, char** argv) { return support::run_benchmarks(argc, argv); }
