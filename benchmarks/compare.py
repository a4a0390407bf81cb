#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Our attention beside NumPy and PyTorch, measured in one sitting with one thread count.

Runs, with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS fixed before any process starts:
  - build-bench/benchmarks/attention_bench (--benchmark_format=json): BM_Sdpa (the library's
    public scaled_dot_product_attention), BM_Materialising, BM_Naive, and BM_FmaPeak for the peak;
  - build-bench/benchmarks/multi_head_bench (with --mha): BM_MultiHead, non-causal;
  - the reference timings of ../shared/bench (not part of this repository; pass --shared-bench if it
    lives elsewhere): its bench_numpy.py / bench_torch.py attention functions and its timing.py,
    imported by path and run on the requested shapes only (the scripts' own loops also cover
    N = 256 and 8192 and take several minutes), and bench_torch.py --only mha run as it is;
then prints GFLOP/s per configuration and the ratios ours / theirs.

  benchmarks/compare.py                          # 1 thread, N = 1024 and 4096, d = 128, causal 0/1
  benchmarks/compare.py --threads 2 --mha
  benchmarks/compare.py --seq 256,1024 --dim 64,128 --cpus 1 --json results.json

Build first: cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release
  -DATTENTION_BUILD_BENCHMARKS=ON && cmake --build build-bench. Python: /usr/bin/python3 with
python3-numpy and python3-torch (PyTorch 1.13, Debian 12).
"""
import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def thread_env(threads, max_wait):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["BENCH_MAX_WAIT"] = str(max_wait)  # read by ../shared/bench/timing.py's wait_quiet
    return env


def import_shared(shared_bench):
    if not os.path.isfile(os.path.join(shared_bench, "timing.py")):
        sys.exit(f"compare.py: no timing.py in {shared_bench}; pass --shared-bench DIR "
                 "(the directory holding bench_numpy.py, bench_torch.py and timing.py)")
    sys.path.insert(0, shared_bench)


# ----------------------------------------------------------------------------------------------
# Worker mode: runs inside a fresh Python whose thread variables were set before it started.

def worker(a):
    import_shared(a.shared_bench)
    import timing
    configs = [(n, d, c) for n in a.seq for d in a.dim for c in a.causal]
    if a.worker == "numpy":
        import numpy as np
        import bench_numpy as ref
        rng = np.random.default_rng(0)
        for n, d, c in configs:
            q, k, v, mask = ref.make(n, d, c, rng)
            r = timing.bench(lambda: ref.attention(q, k, v, mask))
            r.update(impl="numpy_seed", N=n, d=d, causal=c,
                     gflops_median=timing.flops_attn(n, d, c) / r["median_s"] * 1e-9)
            print(json.dumps(r), flush=True)
            del q, k, v, mask
    else:
        import torch
        import bench_torch as ref
        torch.set_num_threads(a.threads)
        for n, d, c in configs:
            with torch.inference_mode():
                q, k, v, mask = ref.make(n, d, c)
                for name, fn in (("torch_sdpa", lambda: ref.sdpa(q, k, v, c)),
                                 ("torch_plain", lambda: ref.plain(q, k, v, mask))):
                    r = timing.bench(fn)
                    r.update(impl=name, N=n, d=d, causal=c, torch_threads=torch.get_num_threads(),
                             gflops_median=timing.flops_attn(n, d, c) / r["median_s"] * 1e-9)
                    print(json.dumps(r), flush=True)
            del q, k, v, mask


# ----------------------------------------------------------------------------------------------
# Driver mode.

def run_python(a, env, prefix, args, label):
    cmd = prefix + [a.python] + args
    print(f"# {label}: {' '.join(args[:3])} ...", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run_google_benchmark(a, env, prefix, binary, pattern, timing):
    if not os.path.isfile(binary):
        sys.exit(f"compare.py: {binary} not found; build with -DATTENTION_BUILD_BENCHMARKS=ON "
                 "(see --help) or pass --build-dir")
    cmd = prefix + [binary, f"--benchmark_filter={pattern}", "--benchmark_format=json",
                    f"--benchmark_min_time={a.min_time}"]
    if a.repetitions > 1:
        cmd += [f"--benchmark_repetitions={a.repetitions}",
                "--benchmark_report_aggregates_only=true"]
    print(f"# {os.path.basename(binary)} --benchmark_filter='{pattern}'", file=sys.stderr,
          flush=True)
    timing.wait_quiet(max_wait=a.max_wait)
    with timing.Contention() as contention:
        out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    report = json.loads(out)
    results = {}
    for b in report["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        results[b["run_name"]] = b
    return report["context"], results, contention.other_frac


def parse_args(b):
    # run_name "BM_Sdpa/seq:1024/dim:128/causal:0/threads:1/real_time" -> {"seq": 1024, ...}
    return {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", b)}


def fmt(x, width=8, digits=1):
    return f"{x:{width}.{digits}f}" if x is not None else f"{'-':>{width}}"


def ratio(x, y):
    return f"{x / y:6.2f}x" if x and y else f"{'-':>7}"


def machine_line():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/cpuinfo") as f:
            flags = next((l for l in f if l.startswith("flags")), "")
        simd = "AVX-512" if " avx512f" in flags else "AVX2" if " avx2" in flags else "SSE"
    except OSError:
        simd = "?"
    return f"{model}, {os.cpu_count()} cores, {simd}; {platform.system()} {platform.release()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--threads", type=int, default=1, help="thread count for everyone (default 1)")
    ap.add_argument("--seq", type=int_list, default=[1024, 4096], help="N values (default 1024,4096)")
    ap.add_argument("--dim", type=int_list, default=[128], help="d values (default 128)")
    ap.add_argument("--causal", type=int_list, default=[0, 1], help="causal values (default 0,1)")
    ap.add_argument("--mha", action="store_true", help="also compare MultiHeadAttention::forward "
                    "with torch.nn.MultiheadAttention (d_model 512/8 and 1024/16, N 512/2048)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    ap.add_argument("--shared-bench", default=os.path.join(REPO, "..", "shared", "bench"),
                    help="directory of the NumPy/PyTorch reference scripts (default ../shared/bench "
                    "relative to the repository)")
    ap.add_argument("--min-time", type=float, default=0.2, help="--benchmark_min_time (seconds)")
    ap.add_argument("--repetitions", type=int, default=3,
                    help="Google Benchmark repetitions; the median is reported (default 3)")
    ap.add_argument("--max-wait", type=float, default=15,
                    help="seconds to wait for a quiet machine before each measurement (default 15)")
    ap.add_argument("--cpus", default="", help="run everything under taskset -c CPUS, e.g. 1")
    ap.add_argument("--no-python", action="store_true", help="skip NumPy and PyTorch")
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="interpreter with NumPy and PyTorch 1.13")
    ap.add_argument("--json", default="", help="also write every raw result to this file")
    ap.add_argument("--worker", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.shared_bench = os.path.abspath(a.shared_bench)
    if a.worker:
        return worker(a)

    import_shared(a.shared_bench)
    import timing
    env = thread_env(a.threads, a.max_wait)
    prefix = ["taskset", "-c", a.cpus] if a.cpus else []
    bench_dir = os.path.join(os.path.abspath(a.build_dir), "benchmarks")
    seq_long = [n for n in a.seq if n >= 16384]
    seq_short = [n for n in a.seq if n < 16384]
    alt = lambda xs: "|".join(map(str, xs))
    patterns = [f"^BM_FmaPeak/bits:32/threads:{a.threads}/"]
    if seq_short:
        patterns.append(f"^BM_(Sdpa|Materialising|Naive)/seq:({alt(seq_short)})/dim:({alt(a.dim)})"
                        f"/causal:({alt(a.causal)})/threads:{a.threads}/")
    if seq_long:
        patterns.append(f"^BM_(Sdpa|Materialising|Naive)Long/seq:({alt(seq_long)})"
                        f"/dim:({alt(a.dim)})/causal:({alt(a.causal)})/threads:{a.threads}/")
    context, ours, other = run_google_benchmark(
        a, env, prefix, os.path.join(bench_dir, "attention_bench"), "|".join(patterns), timing)
    contention = {"attention_bench": other}
    mha_ours = {}
    if a.mha:
        _, mha_ours, other = run_google_benchmark(
            a, env, prefix, os.path.join(bench_dir, "multi_head_bench"),
            f"^BM_MultiHead/.*/causal:0/threads:{a.threads}/", timing)
        contention["multi_head_bench"] = other

    theirs = []
    if not a.no_python:
        common = ["--shared-bench", a.shared_bench, "--threads", str(a.threads),
                  "--seq", alt(a.seq).replace("|", ","), "--dim", alt(a.dim).replace("|", ","),
                  "--causal", alt(a.causal).replace("|", ",")]
        me = os.path.abspath(__file__)
        theirs += run_python(a, env, prefix, [me, "--worker", "numpy"] + common, "NumPy")
        theirs += run_python(a, env, prefix, [me, "--worker", "torch"] + common, "PyTorch")
        if a.mha:
            theirs += run_python(a, env, prefix,
                                 [os.path.join(a.shared_bench, "bench_torch.py"), "--threads",
                                  str(a.threads), "--only", "mha"], "PyTorch MHA")

    # ------------------------------------------------------------------------------------------
    peak = float(context.get("fma_peak_fp32_gflops", "nan"))
    print(f"machine: {machine_line()}")
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='minutes')}; "
          f"threads: {a.threads}{' (taskset -c ' + a.cpus + ')' if a.cpus else ''}; "
          f"FMA peak fp32, one core: {peak:.1f} GFLOP/s; Eigen SIMD: {context.get('eigen_simd')}")
    print(f"other processes' CPU use during our runs: "
          + ", ".join(f"{k} {v:.0%}" for k, v in contention.items())
          + (f"; during the Python references: max "
             f"{max(r.get('other_cpu_frac', 0) for r in theirs):.0%}" if theirs else ""))
    print()

    def our(kind, n, d, c):
        long = "Long" if n >= 16384 else ""
        name = f"BM_{kind}{long}/seq:{n}/dim:{d}/causal:{c}/threads:{a.threads}/real_time"
        b = ours.get(name)
        return (b["GFLOP/s"], b["peak_fraction"]) if b else (None, None)

    def cpu_share(kind, n, d, c):
        # CPU time / (real time x threads): below ~0.9 the run waited for a busy core.
        long = "Long" if n >= 16384 else ""
        b = ours.get(f"BM_{kind}{long}/seq:{n}/dim:{d}/causal:{c}/threads:{a.threads}/real_time")
        return b["cpu_time"] / (b["real_time"] * a.threads) if b else None

    def their(impl, **key):
        for r in theirs:
            if r["impl"] == impl and all(r.get(k) == v for k, v in key.items()):
                return r["gflops_median"]
        return None

    print("GFLOP/s (4 N^2 d FLOPs, half that causal), float32; ratios: ours (BM_Sdpa) / theirs;")
    print("cpu% = our CPU time / (real time x threads): well below 100 means we waited for a core")
    head = (f"{'N':>6} {'d':>4} {'causal':>6} | {'ours':>8} {'%peak':>6} {'cpu%':>5} {'materl.':>8} "
            f"{'naive':>8} {'NumPy':>8} {'PT SDPA':>8} {'PT plain':>8} | {'/naive':>7} "
            f"{'/NumPy':>7} {'/SDPA':>7}")
    print(head)
    print("-" * len(head))
    for n in a.seq:
        for d in a.dim:
            for c in a.causal:
                mine, frac = our("Sdpa", n, d, c)
                mat, _ = our("Materialising", n, d, c)
                naive, _ = our("Naive", n, d, c)
                key = dict(N=n, d=d, causal=c)
                numpy_ = their("numpy_seed", **key)
                sdpa = their("torch_sdpa", **key)
                plain = their("torch_plain", **key)
                pct = fmt(frac * 100 if frac else None, 6, 1)
                share = cpu_share("Sdpa", n, d, c)
                cpu = fmt(share * 100 if share else None, 5, 0)
                print(f"{n:>6} {d:>4} {c:>6} | {fmt(mine)} {pct} {cpu} {fmt(mat)} {fmt(naive)} "
                      f"{fmt(numpy_)} {fmt(sdpa)} {fmt(plain)} | {ratio(mine, naive)} "
                      f"{ratio(mine, numpy_)} {ratio(mine, sdpa)}")

    if a.mha:
        print()
        print("MultiHeadAttention forward, self-attention, non-causal, float32: GFLOP/s with "
              "8 N D^2 + 4 N^2 D FLOPs")
        head = (f"{'N':>6} {'D':>5} {'heads':>5} | {'ours':>8} {'%peak':>6} {'cpu%':>5} {'PT MHA':>8} "
                f"{'fast':>5} | {'ours/PT':>7}")
        print(head)
        print("-" * len(head))
        for name, b in sorted(mha_ours.items(), key=lambda kv: (parse_args(kv[0])["d_model"],
                                                               parse_args(kv[0])["seq"])):
            p = parse_args(name)
            pt = next((r for r in theirs if r["impl"] == "torch_mha" and r["N"] == p["seq"]
                       and r["d_model"] == p["d_model"]), None)
            pt_gflops = pt["gflops_median"] if pt else None
            fast = str(pt["fast_path"]) if pt else "-"
            share = b["cpu_time"] / (b["real_time"] * a.threads)
            print(f"{p['seq']:>6} {p['d_model']:>5} {p['heads']:>5} | {fmt(b['GFLOP/s'])} "
                  f"{fmt(b['peak_fraction'] * 100, 6, 1)} {fmt(share * 100, 5, 0)} "
                  f"{fmt(pt_gflops)} {fast:>5} | "
                  f"{ratio(b['GFLOP/s'], pt_gflops)}")

    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(context=context, ours=ours, multi_head=mha_ours, theirs=theirs,
                           contention=contention, threads=a.threads, cpus=a.cpus), f, indent=1)


if __name__ == "__main__":
    main()
