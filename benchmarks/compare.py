#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Our attention beside oneDNN, ONNX Runtime, NumPy and PyTorch, measured in one run.

For each thread count, on the same shapes (single head, float32 unless named):
  ours     build-bench/benchmarks/attention_bench: BM_Sdpa (the public entry point
           scaled_dot_product_attention), BM_Materialising, BM_Naive, and BM_FmaPeak (the peak);
  oneDNN   build-bench/benchmarks/onednn_bench (built when libdnnl-dev is installed): matmul +
           softmax + matmul in float32 (BM_OneDnn) and bf16 (BM_OneDnnBf16: q, k, v and the
           softmax output in bf16, scores and output float32); causal by an additive mask, so it
           computes the masked half too; a row oneDNN cannot run on this CPU is shown as "n/a";
  ORT      ONNX Runtime's com.microsoft MultiHeadAttention through npm's onnxruntime-node
           (benchmarks/ort/ort_attention.mjs); install it once with benchmarks/setup_ort.sh into
           build-bench/ort, or point --ort-dir (or ATTENTION_ORT_DIR) at another install;
  NumPy    the seeds' textbook NumPy attention, and PyTorch 1.13's SDPA and matmul + softmax, from
  PyTorch  ../shared/bench (not part of this repository: --shared-bench DIR), run with
           OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from their environment only;
  MHA      with --mha: MultiHeadAttention::forward beside torch.nn.MultiheadAttention.
A missing peer is skipped with a note. Every figure is GFLOP/s with 4 N^2 d FLOPs, half that causal
(the FlashAttention convention), and each row shows the ratios ours / theirs. The header records
the CPU, its relevant ISA flags, the thread counts, the date, the load average and the CPU time
other processes took during the run; figures measured under load are marked as such.

  benchmarks/compare.py           # everything: N 256..8192, d 64/128, causal 0/1, 1 and 2 threads
  benchmarks/compare.py --threads 1 --seq 1024,4096 --dim 128 --no-python
  benchmarks/compare.py --markdown perf.md --json perf.json
  benchmarks/compare.py --mha --threads 1 --cpus 1

Build first: cmake -S . -B build-bench -G Ninja -DCMAKE_BUILD_TYPE=Release
  -DATTENTION_BUILD_BENCHMARKS=ON && cmake --build build-bench (or benchmarks/compare.sh, which
builds and then runs this). Python: /usr/bin/python3 with python3-numpy and python3-torch.
"""
import argparse
import contextlib
import ctypes
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Set on the project's machines; they pin an older OpenBLAS kernel that slows a current OpenBLAS.
OPENBLAS_OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def thread_env(threads, max_wait):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["BENCH_MAX_WAIT"] = str(max_wait)  # read by ../shared/bench/timing.py's wait_quiet
    return env


def blas_in_use():
    """The BLAS libraries this process has loaded, and for OpenBLAS its configuration and the kernel
    it chose (openblas_get_corename: what OPENBLAS_CORETYPE would force). numpy.show_config() on
    Debian names only the build-time 'blas', and threadpoolctl is not packaged: ask the library."""
    with open("/proc/self/maps") as f:
        paths = sorted({os.path.realpath(line.split()[-1]) for line in f
                        if re.search(r"/lib[^/]*(blas|mkl|blis)[^/]*\.so", line)})
    found = []
    for path in paths:
        lib = ctypes.CDLL(path)
        if hasattr(lib, "openblas_get_corename"):
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            found.append(f"OpenBLAS, kernel {lib.openblas_get_corename().decode()}, "
                         f"{lib.openblas_get_num_threads()} thread(s) "
                         f"[{lib.openblas_get_config().decode().strip()}] ({path})")
        elif "/blas/libblas.so" in path:
            found.append(f"reference BLAS, not OpenBLAS: no SIMD kernels ({path}; Debian: "
                         "apt-get install libopenblas0-pthread)")
        else:
            found.append(path)
    return "; ".join(found) or "no BLAS library loaded"


# ----------------------------------------------------------------------------------------------
# Worker mode: runs inside a fresh Python whose thread variables were set before it started.

def worker(a):
    sys.path.insert(0, a.shared_bench)
    import timing
    configs = [(n, d, c) for n in a.seq for d in a.dim for c in a.causal]
    if a.worker == "numpy":
        import numpy as np
        import bench_numpy as ref
        rng = np.random.default_rng(0)
        small = np.ones((64, 64), np.float32)
        small @ small  # loads the BLAS
        print(json.dumps(dict(impl="numpy_blas", blas=blas_in_use())), flush=True)
        for n, d, c in configs:
            q, k, v, mask = ref.make(n, d, c, rng)
            r = timing.bench(lambda: ref.attention(q, k, v, mask), attempts=a.attempts)
            r.update(impl="numpy_seed", N=n, d=d, causal=c,
                     gflops_median=timing.flops_attn(n, d, c) / r["median_s"] * 1e-9)
            print(json.dumps(r), flush=True)
            del q, k, v, mask
    else:
        import torch
        import bench_torch as ref
        torch.set_num_threads(a.threads)
        torch.ones(64, 64) @ torch.ones(64, 64)
        print(json.dumps(dict(impl="torch_blas", blas=blas_in_use())), flush=True)
        for n, d, c in configs:
            with torch.inference_mode():
                q, k, v, mask = ref.make(n, d, c)
                for name, fn in (("torch_sdpa", lambda: ref.sdpa(q, k, v, c)),
                                 ("torch_plain", lambda: ref.plain(q, k, v, mask))):
                    r = timing.bench(fn, attempts=a.attempts)
                    r.update(impl=name, N=n, d=d, causal=c, torch_threads=torch.get_num_threads(),
                             gflops_median=timing.flops_attn(n, d, c) / r["median_s"] * 1e-9)
                    print(json.dumps(r), flush=True)
            del q, k, v, mask


# ----------------------------------------------------------------------------------------------
# The machine: what it is, and how busy it was.

def busy_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait


def wait_quiet(max_wait, threshold=0.08):
    """Waits (at most max_wait seconds) for a second in which the whole machine was < 8% busy."""
    start = time.monotonic()
    while time.monotonic() - start < max_wait:
        b0, t0 = busy_jiffies(), time.monotonic()
        time.sleep(1.0)
        busy = (busy_jiffies() - b0) / os.sysconf("SC_CLK_TCK") / ((time.monotonic() - t0) *
                                                                  os.cpu_count())
        if busy < threshold:
            return


class OtherCpu:
    """CPU seconds other processes used during the block, over wall time x cores (0: the machine
    was ours alone). Our own use is this process's and its finished children's (os.times)."""

    def __enter__(self):
        self.busy, self.own, self.wall = busy_jiffies(), self._own(), time.monotonic()
        return self

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __exit__(self, *exc):
        wall = time.monotonic() - self.wall
        busy = (busy_jiffies() - self.busy) / os.sysconf("SC_CLK_TCK")
        self.fraction = max(0.0, busy - (self._own() - self.own)) / (wall * os.cpu_count())


def cpu_description():
    info = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
            if not line.strip():
                break
    flags = set(info.get("flags", "").split())
    isa = " ".join(f"{flag}{'+' if flag in flags else '-'}" for flag in
                   ("avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"))
    model = (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} "
             f"model {info.get('model', '?')})")
    return model, isa


# ----------------------------------------------------------------------------------------------
# Driver mode.

class Run:
    """What the peers returned, what was skipped and why, and how long each column took."""

    def __init__(self):
        self.gb = {}  # Google Benchmark run_name -> result, for every executable
        self.theirs = []  # JSON records of NumPy, PyTorch and ORT
        self.notes = []
        self.seconds = {}
        self.other_cpu = {}
        self.context = {}

    @contextlib.contextmanager
    def timed(self, column):
        start = time.monotonic()
        try:
            yield
        finally:
            self.seconds[column] = self.seconds.get(column, 0) + time.monotonic() - start


def run_google_benchmark(a, run, env, prefix, binary, pattern, column):
    cmd = prefix + [binary, f"--benchmark_filter={pattern}", "--benchmark_format=json",
                    f"--benchmark_min_time={a.min_time}"]
    if a.repetitions > 1:
        cmd += [f"--benchmark_repetitions={a.repetitions}",
                "--benchmark_report_aggregates_only=true"]
    print(f"# {os.path.basename(binary)} --benchmark_filter='{pattern}'", file=sys.stderr,
          flush=True)
    with run.timed(column):
        wait_quiet(a.max_wait)
        with OtherCpu() as other:
            out = subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    run.other_cpu.setdefault(column, []).append(other.fraction)
    report = json.loads(out)
    run.context[os.path.basename(binary)] = report["context"]
    for b in report["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        run.gb[b["run_name"]] = b


def run_json_lines(run, env, cmd, column, label):
    print(f"# {label}: {' '.join(os.path.basename(c) for c in cmd[:3])} ...", file=sys.stderr,
          flush=True)
    with run.timed(column):
        with OtherCpu() as other:
            proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    run.other_cpu.setdefault(column, []).append(other.fraction)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        run.notes.append(f"{label} exited with status {proc.returncode} (rows it did not report "
                         "show '-')")
    return records


def find_ort(a):
    """(node, ort_dir) when ONNX Runtime can run, else None with a note saying what is missing."""
    node = shutil.which(a.node)
    if not node:
        return None, f"ORT skipped: {a.node} not found (Debian: apt-get install nodejs npm)"
    if not os.path.isdir(os.path.join(a.ort_dir, "node_modules", "onnxruntime-node")):
        return None, (f"ORT skipped: no onnxruntime-node in {a.ort_dir} (run "
                      "benchmarks/setup_ort.sh once, or pass --ort-dir / set ATTENTION_ORT_DIR)")
    return node, None


def measure(a, run, threads):
    env = thread_env(threads, a.max_wait)
    prefix = ["taskset", "-c", a.cpus] if a.cpus else []
    bench_dir = os.path.join(a.build_dir, "benchmarks")
    alt = lambda xs: "|".join(map(str, xs))
    shapes = (f"/seq:({alt(a.seq)})/dim:({alt(a.dim)})/causal:({alt(a.causal)})"
              f"/threads:{threads}/")

    ours = os.path.join(bench_dir, "attention_bench")
    if not os.path.isfile(ours):
        sys.exit(f"compare.py: {ours} not found; build with -DATTENTION_BUILD_BENCHMARKS=ON "
                 "(see --help) or pass --build-dir")
    # The long shapes are registered as BM_*Long (BM_SdpaLong: N = 8192 and 16384; the
    # materialising paths: 16384, one thread).
    run_google_benchmark(a, run, env, prefix, ours,
                         f"^BM_FmaPeak/bits:32/threads:{threads}/|"
                         f"^BM_(Sdpa|SdpaBFloat16|Materialising|Naive)(Long)?{shapes}", "ours")

    if not a.no_onednn:
        onednn = os.path.join(bench_dir, "onednn_bench")
        if os.path.isfile(onednn):
            run_google_benchmark(a, run, env, prefix, onednn, f"^BM_OneDnn(Bf16)?{shapes}",
                                 "oneDNN")
        elif threads == a.threads[0]:
            run.notes.append(f"oneDNN skipped: {onednn} not built (install libdnnl-dev and "
                             "re-run cmake)")

    if not a.no_ort:
        node, why_not = find_ort(a)
        if node:
            script = os.path.join(REPO, "benchmarks", "ort", "ort_attention.mjs")
            cmd = prefix + [node, script, "--ort-dir", a.ort_dir, "--threads", str(threads),
                            "--seq", alt(a.seq).replace("|", ","),
                            "--dim", alt(a.dim).replace("|", ","),
                            "--causal", alt(a.causal).replace("|", ","),
                            "--min-time", str(a.min_time), "--repetitions", str(a.repetitions)]
            with run.timed("ORT"):
                wait_quiet(a.max_wait)
            run.theirs += run_json_lines(run, env, cmd, "ORT", "ONNX Runtime")
        elif threads == a.threads[0]:
            run.notes.append(why_not)

    if not a.no_python:
        if not os.path.isfile(os.path.join(a.shared_bench, "timing.py")):
            if threads == a.threads[0]:
                run.notes.append(f"NumPy and PyTorch skipped: no bench_numpy.py / bench_torch.py /"
                                 f" timing.py in {a.shared_bench} (--shared-bench DIR)")
        else:
            python_env = dict(env)
            for var in OPENBLAS_OVERRIDES:
                python_env.pop(var, None)
            common = ["--shared-bench", a.shared_bench, "--threads", str(threads),
                      "--seq", ",".join(map(str, a.python_seq)),
                      "--dim", ",".join(map(str, a.dim)),
                      "--causal", ",".join(map(str, a.causal)), "--attempts", str(a.attempts)]
            me = os.path.abspath(__file__)
            for impl, column in (("numpy", "NumPy"), ("torch", "PyTorch")):
                for r in run_json_lines(run, python_env, prefix + [a.python, me, "--worker", impl]
                                        + common, column, column):
                    r["threads"] = threads
                    run.theirs.append(r)
            if a.mha:
                for r in run_json_lines(run, python_env,
                                        prefix + [a.python,
                                                  os.path.join(a.shared_bench, "bench_torch.py"),
                                                  "--threads", str(threads), "--only", "mha"],
                                        "PyTorch", "PyTorch MHA"):
                    r["threads"] = threads
                    run.theirs.append(r)

    if a.mha:
        run_google_benchmark(a, run, env, prefix, os.path.join(bench_dir, "multi_head_bench"),
                             f"^BM_MultiHead/.*/causal:0/threads:{threads}/", "ours")


# ----------------------------------------------------------------------------------------------
# Report.

def fmt(x, width=8, digits=1, missing="-"):
    return f"{x:{width}.{digits}f}" if x is not None else f"{missing:>{width}}"


def short(x):
    """GFLOP/s for the Markdown table: 3 significant digits, no exponent."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def ratio(x, y, width=7):
    return f"{x / y:{width - 1}.2f}x" if x and y else f"{'-':>{width}}"


def duration(seconds):
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


class Table:
    """Looks up one row's figures from a finished run."""

    def __init__(self, run, threads):
        self.run, self.threads = run, threads

    def gb(self, kind, n, d, c):
        # attention_bench registers the long shapes as BM_<kind>Long (BM_SdpaLong at N = 8192 and
        # 16384, the materialising and naive ones at 16384): take whichever the run has.
        for long in ("", "Long"):
            b = self.run.gb.get(f"BM_{kind}{long}/seq:{n}/dim:{d}/causal:{c}/"
                                f"threads:{self.threads}/real_time")
            if b:
                return b
        return None

    def gflops(self, kind, n, d, c):
        b = self.gb(kind, n, d, c)
        return b.get("GFLOP/s") if b and not b.get("error_occurred") else None

    def error(self, kind, n, d, c):
        b = self.gb(kind, n, d, c)
        return b.get("error_message") if b and b.get("error_occurred") else None

    def record(self, impl, n, d, c):
        return next((r for r in self.run.theirs if r.get("impl") == impl and r.get("N") == n
                     and r.get("d") == d and r.get("causal") == c
                     and r.get("threads") == self.threads), None)

    def theirs(self, impl, n, d, c):
        r = self.record(impl, n, d, c)
        return r.get("gflops_median") if r else None

    def row(self, n, d, c):
        b = self.gb("Sdpa", n, d, c)
        share = b["cpu_time"] / (b["real_time"] * self.threads) if b else None
        return dict(ours=self.gflops("Sdpa", n, d, c),
                    # all-bfloat16 q, k, v and output (attention_bench registers it at N = 1024
                    # and 4096), beside oneDNN's bf16
                    ours_bf16=self.gflops("SdpaBFloat16", n, d, c),
                    peak=b["peak_fraction"] * 100 if b else None,
                    cpu=share * 100 if share else None,
                    materialising=self.gflops("Materialising", n, d, c),
                    naive=self.gflops("Naive", n, d, c),
                    onednn=self.gflops("OneDnn", n, d, c),
                    onednn_bf16=self.gflops("OneDnnBf16", n, d, c),
                    ort=self.theirs("ort_mha", n, d, c),
                    numpy=self.theirs("numpy_seed", n, d, c),
                    sdpa=self.theirs("torch_sdpa", n, d, c),
                    plain=self.theirs("torch_plain", n, d, c),
                    # Ran but could not measure (see the notes), as opposed to not run.
                    skipped={key for key, failed in (
                        ("onednn", self.error("OneDnn", n, d, c)),
                        ("onednn_bf16", self.error("OneDnnBf16", n, d, c)),
                        ("ort", (self.record("ort_mha", n, d, c) or {}).get("error"))) if failed})


# (key in Table.row, text column, Markdown column)
PEERS = (("onednn", "oneDNN", "oneDNN f32"), ("onednn_bf16", "DNNLbf16", "oneDNN bf16"),
         ("ort", "ORT", "ORT MHA"), ("numpy", "NumPy", "NumPy"),
         ("sdpa", "PT SDPA", "PyTorch SDPA"))


def print_tables(a, run):
    for threads in a.threads:
        table = Table(run, threads)
        print(f"\n{threads} thread(s): GFLOP/s, float32 unless named; %peak against {threads} x "
              "one core's FP32 FMA peak; cpu% = our CPU time / (real time x threads)")
        head = (f"{'N':>6} {'d':>4} {'causal':>6} | {'ours':>7} {'%peak':>6} {'cpu%':>5} "
                f"{'bf16':>7} {'materl.':>7} {'naive':>7} | "
                + " ".join(f"{short:>8}" for _, short, _ in PEERS) + f" {'PT plain':>8} | "
                + " ".join(f"{'/' + short:>9}" for _, short, _ in PEERS) + f" {'/naive':>7}"
                + f" {'bf16/DNNL':>9}")
        print(head)
        print("-" * len(head))
        for n in a.seq:
            for d in a.dim:
                for c in a.causal:
                    r = table.row(n, d, c)
                    print(f"{n:>6} {d:>4} {c:>6} | {fmt(r['ours'], 7)} {fmt(r['peak'], 6)} "
                          f"{fmt(r['cpu'], 5, 0)} {fmt(r['ours_bf16'], 7)} "
                          f"{fmt(r['materialising'], 7)} "
                          f"{fmt(r['naive'], 7)} | "
                          + " ".join(fmt(r[key], missing="n/a" if key in r["skipped"] else "-")
                                     for key, _, _ in PEERS)
                          + f" {fmt(r['plain'])} | "
                          + " ".join(ratio(r["ours"], r[key], 9) for key, _, _ in PEERS)
                          + f" {ratio(r['ours'], r['naive'])}"
                          + f" {ratio(r['ours_bf16'], r['onednn_bf16'], 9)}")
        if a.mha:
            print_mha(run, threads)


def print_mha(run, threads):
    print(f"\nMultiHeadAttention forward, self-attention, non-causal, float32, {threads} "
          "thread(s): GFLOP/s with 8 N D^2 + 4 N^2 D FLOPs")
    head = (f"{'N':>6} {'D':>5} {'heads':>5} | {'ours':>8} {'%peak':>6} {'cpu%':>5} {'PT MHA':>8} "
            f"{'fast':>5} | {'ours/PT':>7}")
    print(head)
    print("-" * len(head))
    args = lambda name: {k: int(v) for k, v in re.findall(r"(\w+):(\d+)", name)}
    mine = [(args(name), b) for name, b in run.gb.items() if name.startswith("BM_MultiHead/")
            and args(name).get("threads") == threads]
    for p, b in sorted(mine, key=lambda pb: (pb[0]["d_model"], pb[0]["seq"])):
        pt = next((r for r in run.theirs if r["impl"] == "torch_mha" and r["N"] == p["seq"]
                   and r["d_model"] == p["d_model"] and r.get("threads") == threads), None)
        pt_gflops = pt["gflops_median"] if pt else None
        fast = str(pt["fast_path"]) if pt else "-"
        share = b["cpu_time"] / (b["real_time"] * threads)
        print(f"{p['seq']:>6} {p['d_model']:>5} {p['heads']:>5} | {fmt(b['GFLOP/s'])} "
              f"{fmt(b['peak_fraction'] * 100, 6, 1)} {fmt(share * 100, 5, 0)} "
              f"{fmt(pt_gflops)} {fast:>5} | {ratio(b['GFLOP/s'], pt_gflops)}")


def write_markdown(a, run, path, header):
    lines = [f"Measured with `benchmarks/compare.py` in one run: {header['machine']}; "
             f"{header['date']}; threads as in each row. GFLOP/s, 4·N²·d FLOPs (half of that "
             "causal), float32 unless named; in parentheses ours ÷ theirs; n/a: could not run "
             "(see below), -: not measured. oneDNN and ORT compute the masked half of causal "
             "attention too.", ""]
    if header["under_load"]:
        lines += [f"**Measured under load** ({header['load']}): not for publication.", ""]
    lines.append("| threads | N | d | causal | ours (% of peak) | ours bf16 | "
                 + " | ".join(long for _, _, long in PEERS) + " |")
    lines.append("|---:|---:|---:|---:|---:|---:|" + "---:|" * len(PEERS))
    for threads in a.threads:
        table = Table(run, threads)
        for n in a.seq:
            for d in a.dim:
                for c in a.causal:
                    r = table.row(n, d, c)
                    ours = f"{short(r['ours'])} ({r['peak']:.0f}%)" if r["ours"] else "-"
                    # ours in bf16, in parentheses against oneDNN's bf16 (both all-bf16 inputs)
                    bf16, dnnl_bf16 = r["ours_bf16"], r["onednn_bf16"]
                    if not bf16:
                        ours_bf16 = "-"
                    elif dnnl_bf16:
                        ours_bf16 = f"{short(bf16)} ({bf16 / dnnl_bf16:.2f}×)"
                    else:
                        ours_bf16 = short(bf16)
                    cells = []
                    for key, _, _ in PEERS:
                        theirs = r[key]
                        if theirs and r["ours"]:
                            cells.append(f"{short(theirs)} ({r['ours'] / theirs:.2f}×)")
                        elif theirs:
                            cells.append(short(theirs))
                        else:
                            cells.append("n/a" if key in r["skipped"] else "-")
                    lines.append(f"| {threads} | {n} | {d} | {'yes' if c else 'no'} | {ours} | "
                                 f"{ours_bf16} | " + " | ".join(cells) + " |")
    lines += [""] + [f"- {line}" for line in header["facts"][2:] + run.notes]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def describe(a, run, started, load_before, load_after, other):
    """The run's circumstances, one fact a line (printed, and listed under the Markdown table),
    and the notes on what was skipped and why (added to run.notes)."""
    model, isa = cpu_description()
    ours = run.context.get("attention_bench", {})
    under_load = other > 0.05 or load_before[0] > 1.0
    load = (f"1-minute load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; other "
            f"processes took {other:.0%} of the CPU during the run")
    header = dict(machine=f"{model}, {os.cpu_count()} CPUs, {isa}",
                  date=started.isoformat(timespec="minutes"), load=load, under_load=under_load)
    facts = [f"machine: {header['machine']}; {platform.system()} {platform.release()}",
             f"date: {header['date']}; threads: {','.join(map(str, a.threads))}"
             f"{' (taskset -c ' + a.cpus + ')' if a.cpus else ''}; FP32 FMA peak, one core: "
             f"{float(ours.get('fma_peak_fp32_gflops', 'nan')):.1f} GFLOP/s; our build's "
             f"Eigen SIMD: {ours.get('eigen_simd')}"]
    onednn = run.context.get("onednn_bench")
    if onednn:
        facts.append(f"oneDNN {onednn.get('onednn_version')}, running its "
                     f"{onednn.get('onednn_isa')} kernels; causal by an additive mask (the masked "
                     "half is computed)")
    ort = next((r for r in run.theirs if r.get("impl") == "ort_mha" and r.get("ort_version")),
               None)
    if ort:
        facts.append(f"ONNX Runtime {ort['ort_version']} (onnxruntime-node, Node {ort['node']}): "
                     "MultiHeadAttention, one head"
                     + (", flash attention disabled by ORT_DISABLE_FLASH_ATTENTION"
                        if ort.get("flash_disabled") else ""))
    if any(r.get("impl") in ("numpy_blas", "torch_blas") for r in run.theirs):
        was = ", ".join(f"{v}={os.environ[v]}" if v in os.environ else f"{v} not set"
                        for v in OPENBLAS_OVERRIDES)
        facts.append(f"NumPy and PyTorch ran with {' and '.join(OPENBLAS_OVERRIDES)} removed from "
                     f"their environment only (in ours: {was})")
        for impl, name in (("numpy_blas", "NumPy"), ("torch_blas", "PyTorch")):
            blas = {r["blas"] for r in run.theirs if r.get("impl") == impl}
            if blas:
                facts.append(f"{name}'s BLAS: {' | '.join(sorted(blas))}")
    facts.append(("UNDER LOAD: " if under_load else "") + load + "; by column, at most: "
                 + ", ".join(f"{k} {max(v):.0%}" for k, v in run.other_cpu.items()))
    facts.append("wall time by column (all thread counts, waits included): "
                 + ", ".join(f"{k} {duration(v)}" for k, v in run.seconds.items())
                 + f"; total {duration(sum(run.seconds.values()))}")
    header["facts"] = facts

    errors = {}
    for name, b in run.gb.items():
        if b.get("error_occurred"):
            errors.setdefault(b["error_message"], []).append(name.split("/")[0])
    for message, names in errors.items():
        rows = f"{len(names)} row{'s' if len(names) > 1 else ''}"
        run.notes.append(f"{', '.join(sorted(set(names)))} skipped ({rows}): {message}")
    for r in run.theirs:
        if r.get("error"):
            run.notes.append(f"{r['impl']} N={r['N']} d={r['d']} causal={r['causal']} "
                             f"threads={r['threads']}: {r['error']}")
    missing = [n for n in a.seq if all(Table(run, t).gb("Sdpa", n, d, c) is None
                                       for t in a.threads for d in a.dim for c in a.causal)]
    if missing:
        run.notes.append(f"ours: attention_bench has no BM_Sdpa at N = "
                         f"{', '.join(map(str, missing))}")
    return header



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n", 1)[1])
    ap.add_argument("--threads", type=int_list, default=[1, 2],
                    help="thread counts, each run for everyone (default 1,2)")
    ap.add_argument("--seq", type=int_list, default=[256, 1024, 4096, 8192],
                    help="N values (default 256,1024,4096,8192)")
    ap.add_argument("--dim", type=int_list, default=[64, 128], help="d values (default 64,128)")
    ap.add_argument("--causal", type=int_list, default=[0, 1], help="causal values (default 0,1)")
    ap.add_argument("--python-seq", type=int_list, default=None,
                    help="N values for NumPy and PyTorch (default: --seq); at N = 8192 each of "
                    "their configurations takes minutes on a reference BLAS")
    ap.add_argument("--mha", action="store_true", help="also compare MultiHeadAttention::forward "
                    "with torch.nn.MultiheadAttention (d_model 512/8 and 1024/16, N 512/2048)")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build-bench"))
    ap.add_argument("--shared-bench", default=os.path.join(REPO, "..", "shared", "bench"),
                    help="directory of the NumPy/PyTorch reference scripts (default "
                    "../shared/bench relative to the repository)")
    ap.add_argument("--ort-dir", default=os.environ.get("ATTENTION_ORT_DIR"),
                    help="directory whose node_modules holds onnxruntime-node and onnx-proto "
                    "(default $ATTENTION_ORT_DIR, else BUILD_DIR/ort, where setup_ort.sh installs)")
    ap.add_argument("--node", default="node", help="Node.js executable for ORT (default node)")
    ap.add_argument("--min-time", type=float, default=0.2,
                    help="seconds per measurement: --benchmark_min_time, and ORT's sample length")
    ap.add_argument("--repetitions", type=int, default=3,
                    help="repetitions of each C++ and ORT measurement; the median is reported "
                    "(default 3)")
    ap.add_argument("--max-wait", type=float, default=15,
                    help="seconds to wait for a quiet machine before each measurement (default 15)")
    ap.add_argument("--attempts", type=int, default=3,
                    help="NumPy/PyTorch: measure again, up to this many times in all, while other "
                    "processes took more than 4%% of the CPU (default 3)")
    ap.add_argument("--cpus", default="", help="run everything under taskset -c CPUS, e.g. 1")
    ap.add_argument("--no-python", action="store_true", help="skip NumPy and PyTorch")
    ap.add_argument("--no-onednn", action="store_true", help="skip oneDNN")
    ap.add_argument("--no-ort", action="store_true", help="skip ONNX Runtime")
    ap.add_argument("--python", default="/usr/bin/python3" if os.path.exists("/usr/bin/python3")
                    else sys.executable, help="interpreter with NumPy and PyTorch 1.13")
    ap.add_argument("--json", default="", help="also write every raw result to this file")
    ap.add_argument("--markdown", default="", help="also write the table as Markdown to this file")
    ap.add_argument("--worker", choices=("numpy", "torch"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.shared_bench = os.path.abspath(a.shared_bench)
    if a.worker:
        a.threads = a.threads[0]
        return worker(a)

    a.build_dir = os.path.abspath(a.build_dir)
    a.ort_dir = os.path.abspath(a.ort_dir or os.path.join(a.build_dir, "ort"))
    a.python_seq = a.python_seq or a.seq
    run = Run()
    if a.cpus:
        cpus = sum(int(hi) - int(lo) + 1 if hi else 1
                   for lo, _, hi in (part.partition("-") for part in a.cpus.split(",")))
        dropped = [t for t in a.threads if t > cpus]
        if dropped:
            run.notes.append(f"threads {dropped} dropped: taskset -c {a.cpus} gives {cpus} CPU(s)")
            a.threads = [t for t in a.threads if t <= cpus]
    load_before = os.getloadavg()
    started = datetime.datetime.now().astimezone()
    with OtherCpu() as whole_run:
        for threads in a.threads:
            measure(a, run, threads)
    load_after = os.getloadavg()

    # ------------------------------------------------------------------------------------------
    header = describe(a, run, started, load_before, load_after, whole_run.fraction)
    for line in header["facts"]:
        print(line)
    for note in run.notes:
        print(f"note: {note}")

    print_tables(a, run)

    if a.markdown:
        write_markdown(a, run, a.markdown, header)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(header=header, context=run.context, benchmarks=run.gb,
                           theirs=run.theirs, notes=run.notes, seconds=run.seconds,
                           other_cpu=run.other_cpu, threads=a.threads, cpus=a.cpus), f, indent=1)


if __name__ == "__main__":
    main()
