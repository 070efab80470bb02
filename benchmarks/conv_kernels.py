"""The convolution algorithms on the CPU, layer by layer: im2col + GEMM against Winograd.

    python benchmarks/conv_kernels.py [--batch-size 128] [--threads 1,2] [--repeat 7]

Times the reference CNN's two 3x3 convolutions (28x28, 1 -> 32 and 14x14, 32 -> 64,
'same', ReLU) forward and backward (data and weight gradients) with each of
kernel='im2col', 'winograd2' and 'winograd4', interleaved, best of --repeat, and
prints effective GFLOP/s (the direct convolution's 2 N K C R S P Q per pass: the
backward is two of them) and that as a % of the FP32 peak measured in the same run
(gpuaccel._C.cpu_peak_gflops), then what kernel='auto' chose for each layer.
Also prints the largest error of each algorithm against a float64 reference on a
slice of the batch (relative to the largest |output|).
"""
import argparse
import os
import sys
import time

import numpy as np

LAYERS = [("conv1 28x28 1->32", 1, 28, 32), ("conv2 14x14 32->64", 32, 14, 64)]
KERNELS = ("im2col", "winograd2", "winograd4")


def _best(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        time.sleep(0.05)  # idle cores before each timing
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)

    import gpuaccel as ga
    from gpuaccel import _C, ops

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import reference as R

    g = np.random.default_rng(0)
    n = args.batch_size
    print(f"isa {_C.gemm_isa()}, batch {n}, load average {os.getloadavg()[0]:.2f}")
    for threads in [int(t) for t in args.threads.split(",")]:
        ga.set_num_threads(threads)
        peak = _C.cpu_peak_gflops(threads, 0.5)[0]
        print(f"\n{threads} thread(s): measured peak {peak:.0f} GFLOP/s")
        print(f"{'layer':20s} {'kernel':10s} {'fwd ms':>8s} {'GF/s':>6s} {'%pk':>4s} "
              f"{'bwd ms':>8s} {'GF/s':>6s} {'%pk':>4s}  {'max err y/dx/dw':>24s}")
        for name, c, hw, k in LAYERS:
            x = g.standard_normal((n, c, hw, hw), dtype=np.float32)
            w = (g.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
            b = g.standard_normal(k).astype(np.float32) * 0.1
            dy = g.standard_normal((n, k, hw, hw), dtype=np.float32)
            flops = 2.0 * n * k * c * 9 * hw * hw
            m = 4  # images for the float64 check
            ref = R.conv2d(x[:m], w, b, 1, 1)
            rdx, rdw, _ = R.conv2d_backward(x[:m], w, dy[:m], 1, 1)
            times = {kern: [float("inf"), float("inf")] for kern in KERNELS}
            for _ in range(args.repeat):  # interleaved: the candidates see the same machine
                for kern in KERNELS:
                    tf = _best(lambda: ops.conv2d(x, w, b, padding=1, activation=None, kernel=kern), 1)
                    tb = _best(lambda: ops.conv2d_backward(x, w, dy, padding=1, kernel=kern), 1)
                    times[kern] = [min(times[kern][0], tf), min(times[kern][1], tb)]
            for kern in KERNELS:
                tf, tb = times[kern]
                y = ops.conv2d(x[:m], w, b, padding=1, kernel=kern)
                dx, dw, _ = ops.conv2d_backward(x[:m], w, dy[:m], padding=1, kernel=kern)
                errs = [float(np.abs(a - r).max() / np.abs(r).max()) for a, r in ((y, ref), (dx, rdx), (dw, rdw))]
                print(f"{name:20s} {kern:10s} {tf * 1e3:8.2f} {flops / tf / 1e9:6.1f} {100 * flops / tf / 1e9 / peak:4.0f} "
                      f"{tb * 1e3:8.2f} {2 * flops / tb / 1e9:6.1f} {100 * 2 * flops / tb / 1e9 / peak:4.0f}  "
                      + " ".join(f"{e:.1e}" for e in errs))
            auto = ops.conv2d(x, w, b, padding=1)
            chosen = [kern for kern in KERNELS if np.array_equal(auto, ops.conv2d(x, w, b, padding=1, kernel=kern))]
            print(f"{name:20s} auto -> {chosen[0] if chosen else '?'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
