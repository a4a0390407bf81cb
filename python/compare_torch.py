#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Times attention against PyTorch on the same inputs, in one process, with one thread count.

    python/compare_torch.py --threads 1          # the module of build/python/module, else installed
    python/compare_torch.py --threads 2 --repeat 20

Both libraries get the same number of threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and
MKL_NUM_THREADS are set before NumPy, torch and the module load. (On the project's machines also
unset OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the timing run.) Prints, per case, the median time
of each and the ratio torch / attention, after checking that the two results agree.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--repeat", type=int, default=10)
args = parser.parse_args()
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[variable] = str(args.threads)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "build", "python", "module"))

import numpy as np  # noqa: E402  (after the thread variables)
import torch  # noqa: E402

import attention  # noqa: E402

F = torch.nn.functional


def median_seconds(f, repeat):
    f()  # warm-up: page faults, thread start-up, first-call allocations
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_sdpa(q, k, v, is_causal):
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)
    return F._scaled_dot_product_attention(q, k, v, None, 0.0, False, is_causal)[0]


def main():
    torch.set_num_threads(args.threads)
    print(f"attention {attention.__version__} ({attention.__file__}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f}")
    print(f"{'case':64} {'attention':>10} {'torch':>10} {'torch / attention':>18}")
    torch.manual_seed(0)
    with torch.inference_mode():
        for batch, heads, length, dim, is_causal in [(1, 16, 1024, 64, False),
                                                     (1, 16, 1024, 64, True),
                                                     (4, 8, 512, 128, False)]:
            q, k, v = (torch.randn(batch, heads, length, dim) for _ in range(3))
            qn, kn, vn = q.numpy(), k.numpy(), v.numpy()
            ours = median_seconds(
                lambda: attention.scaled_dot_product_attention(qn, kn, vn, is_causal=is_causal),
                args.repeat)
            theirs = median_seconds(lambda: torch_sdpa(q, k, v, is_causal), args.repeat)
            difference = np.abs(attention.scaled_dot_product_attention(qn, kn, vn, is_causal=is_causal)
                                - torch_sdpa(q, k, v, is_causal).numpy()).max()
            assert difference < 1e-4, difference
            case = (f"scaled_dot_product_attention ({batch}, {heads}, {length}, {dim}) float32"
                    f"{' causal' if is_causal else ''}")
            print(f"{case:64} {ours * 1e3:7.1f} ms {theirs * 1e3:7.1f} ms {theirs / ours:17.2f}x")

        embed_dim, num_heads, batch, length = 1024, 16, 2, 1024
        module = torch.nn.MultiheadAttention(embed_dim, num_heads, batch_first=True).eval()
        layer = attention.MultiHeadAttention(embed_dim, num_heads)
        layer.load_pytorch(*(p.detach().numpy() for p in (module.in_proj_weight, module.in_proj_bias,
                                                          module.out_proj.weight,
                                                          module.out_proj.bias)))
        x = torch.randn(batch, length, embed_dim)
        xn = x.numpy()
        ours = median_seconds(lambda: layer(xn), args.repeat)
        theirs = median_seconds(lambda: module(x, x, x, need_weights=False), args.repeat)
        difference = np.abs(layer(xn) - module(x, x, x, need_weights=False)[0].numpy()).max()
        assert difference < 1e-4, difference
        case = f"MultiHeadAttention({embed_dim}, {num_heads}), x ({batch}, {length}, {embed_dim})"
        print(f"{case:64} {ours * 1e3:7.1f} ms {theirs * 1e3:7.1f} ms {theirs / ours:17.2f}x")


if __name__ == "__main__":
    main()
