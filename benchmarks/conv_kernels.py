"""The convolution algorithms layer by layer: on the CPU im2col + GEMM against Winograd,
on a CUDA device im2col + GEMM against the implicit GEMM.

    python benchmarks/conv_kernels.py [--batch-size 128] [--threads 1,2] [--repeat 7]
    python benchmarks/conv_kernels.py --device cuda [--batch-size 128,512] [--repeat 20]

Times the reference CNN's two 3x3 convolutions (28x28, 1 -> 32 and 14x14, 32 -> 64,
'same', ReLU) forward and backward (data and weight gradients) with each of
kernel='im2col', 'winograd2' and 'winograd4', interleaved, best of --repeat, and
prints effective GFLOP/s (the direct convolution's 2 N K C R S P Q per pass: the
backward is two of them) and that as a % of the FP32 peak measured in the same run
(gpuaccel._C.cpu_peak_gflops), then what kernel='auto' chose for each layer.
Also prints the largest error of each algorithm against a float64 reference on a
slice of the batch (relative to the largest |output|).

With --device cuda the candidates are kernel='im2col' and 'implicit', the operands are
device Tensors (no host copies timed), each figure is the mean of --repeat back-to-back
calls between two ga.cuda.synchronize() after a warm-up, and no peak is printed (none is
measured for the GPU here). Each op call allocates its outputs, and im2col's op call
also allocates and frees its col and GEMM scratch (cudaMalloc / cudaFree, which a
network does once), so the im2col figures carry that cost; the implicit GEMM needs no
scratch but the weight gradient's split sums (kept by the backend). On the CUDA
emulator the script runs at 2 images to check that it works and says that its
timings are not a GPU's; without a usable CUDA device it says why and exits 0.
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
    p.add_argument("--batch-size", default=None, help="images (comma list; default 128, on cuda 128,512)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeat", type=int, default=None, help="timings per case (default 7, on cuda 20)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    args = p.parse_args(argv)
    if args.device.startswith("cuda"):
        return main_cuda(args)
    args.batch_size = int((args.batch_size or "128").split(",")[0])
    args.repeat = args.repeat or 7

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


CUDA_KERNELS = ("im2col", "implicit")


def main_cuda(args):
    import gpuaccel as ga
    from gpuaccel import ops

    if not ga.cuda.is_available():
        print(f"no CUDA device: {ga.cuda.unavailable_reason()}; nothing timed")
        return 0
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    import reference as R

    dev = args.device
    batches = [int(b) for b in (args.batch_size or "128,512").split(",")]
    repeat = args.repeat or 20
    emulated = ga.cuda.is_emulated()
    if emulated:
        print("CUDA emulator (CPU, not a GPU): 2 images, 1 timing; the figures check that the script runs, "
              "they are not GPU speed")
        batches, repeat = [2], 1
    props = ga.cuda.get_device_properties(int(dev.split(":")[1]) if ":" in dev else 0)
    print(f"device {props['name']} ({props['multiprocessors']} SMs)")

    def timed(fn):
        fn()
        ga.cuda.synchronize()
        keep = []
        t = time.perf_counter()
        for _ in range(repeat):
            keep.append(fn())
        ga.cuda.synchronize()
        dt = (time.perf_counter() - t) / repeat
        del keep
        return dt

    g = np.random.default_rng(0)
    for n in batches:
        print(f"\nbatch {n}")
        print(f"{'layer':20s} {'kernel':10s} {'fwd ms':>8s} {'GF/s':>7s} {'bwd ms':>8s} {'GF/s':>7s}  "
              f"{'max err y/dx/dw':>24s}")
        for name, c, hw, k in LAYERS:
            x = g.standard_normal((n, c, hw, hw), dtype=np.float32)
            w = (g.standard_normal((k, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
            b = g.standard_normal(k).astype(np.float32) * 0.1
            dy = g.standard_normal((n, k, hw, hw), dtype=np.float32)
            tx, tw, tb_, tdy = (ga.tensor(a, device=dev) for a in (x, w, b, dy))
            flops = 2.0 * n * k * c * 9 * hw * hw
            m = min(n, 4)
            ref = R.conv2d(x[:m], w, b, 1, 1, relu=True)
            rdx, rdw, _ = R.conv2d_backward(x[:m], w, dy[:m], 1, 1)
            for kern in CUDA_KERNELS:
                tf = timed(lambda: ops.conv2d(tx, tw, tb_, padding=1, activation="relu", device=dev, kernel=kern))
                tbw = timed(lambda: ops.conv2d_backward(tx, tw, tdy, padding=1, device=dev, kernel=kern))
                y = ops.conv2d(x[:m], w, b, padding=1, activation="relu", device=dev, kernel=kern)
                dx, dw, _ = ops.conv2d_backward(x[:m], w, dy[:m], padding=1, device=dev, kernel=kern)
                errs = [float(np.abs(a - r).max() / np.abs(r).max()) for a, r in ((y, ref), (dx, rdx), (dw, rdw))]
                print(f"{name:20s} {kern:10s} {tf * 1e3:8.3f} {flops / tf / 1e9:7.1f} {tbw * 1e3:8.3f} "
                      f"{2 * flops / tbw / 1e9:7.1f}  " + " ".join(f"{e:.1e}" for e in errs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
