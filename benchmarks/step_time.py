"""Training-step time of the reference CNN on the CPU, without the data set.

    python benchmarks/step_time.py [--batch-size 128] [--steps 40] [--epochs 3] [--threads N]
                                   [--kernel auto | im2col | winograd2 | winograd4 | K1,K2]

Trains gpuaccel.models.reference_cnn(seed=0) with Adam on random images of Fashion-MNIST's
shape (1, 28, 28) through Model.fit, after one warm-up epoch, and prints the mean time per
step over the timed epochs (fit's whole loop: batch gathering included) and the median of
fit's own per-step times. Random data trains at the same speed as real data (the kernels
do not look at values), so this isolates the engine; use `python -m gpuaccel.bench` for the
real study. Environment switches it reports: GPUACCEL_FUSE=0 (run conv and max-pool as two
layers), GPUACCEL_CONV_CHUNK=<images> (conv chunk size), GPUACCEL_ISA (GEMM micro-kernel).
--kernel sets Conv2D(kernel=) of the two convolutions (one name for both, or one each),
and the line reports what each ran.
"""
import argparse
import os
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=40, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--kernel", default="auto", help="Conv2D kernel= of both convolutions, or K1,K2")
    args = p.parse_args(argv)

    import gpuaccel as ga

    if args.threads:
        ga.set_num_threads(args.threads)
    n = args.batch_size * args.steps
    g = np.random.default_rng(0)
    x = g.random((n, 1, 28, 28), dtype=np.float32)
    y = g.integers(0, 10, n).astype(np.int32)
    m = ga.models.reference_cnn(seed=0)
    convs = [layer for layer in m.layers if isinstance(layer, ga.layers.Conv2D)]
    kernels = args.kernel.split(",")
    for layer, kernel in zip(convs, kernels * len(convs) if len(kernels) == 1 else kernels):
        layer.algorithm = kernel
    m.compile(optimizer="adam", device="cpu")
    m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # warm-up: buffers, threads, caches
    t0 = time.perf_counter()
    h = m.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0)
    dt = time.perf_counter() - t0
    env = {k: os.environ[k] for k in ("GPUACCEL_FUSE", "GPUACCEL_CONV_CHUNK", "GPUACCEL_ISA") if k in os.environ}
    p50 = float(np.median(h.history["step_time_ms_p50"]))
    from gpuaccel import _C

    print(f"batch {args.batch_size}, threads {ga.get_num_threads()}, isa {_C.gemm_isa()}"
          f"{', ' + str(env) if env else ''}: {1000 * dt / (args.epochs * args.steps):.2f} ms/step "
          f"(step p50 {p50:.2f} ms), {n * args.epochs / dt:,.0f} images/s; "
          f"convs {[k for k in m._net.conv_kernels() if k]}; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
