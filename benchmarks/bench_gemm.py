"""CPU SGEMM: gpuaccel's packed BLIS-style kernel against NumPy's `a @ b` (OpenBLAS or
whatever BLAS NumPy was built with), square sizes and the CNN's own GEMM shapes.

    python benchmarks/bench_gemm.py                       # n = 128 .. 2048, 1 and all threads
    python benchmarks/bench_gemm.py --sizes 256,1024 --threads 2 --cnn --isa avx2

Each figure is 2*m*n*k / median wall time of `--repeat` timed calls (after one warm-up),
in GFLOP/s. Both sides allocate their output each call. Every thread count runs in its
own child process so that NumPy's BLAS gets the same count (OPENBLAS_NUM_THREADS etc.
must be set before NumPy loads). Benchmarks never assert: this only prints.
"""
import argparse
import os
import subprocess
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

# The reference CNN's GEMMs at batch 128: (m, n, k, trans_a, trans_b, what).
CNN_SHAPES = [
    (32, 100352, 9, False, False, "conv1 fwd"),
    (64, 25088, 288, False, False, "conv2 fwd"),
    (64, 288, 25088, False, True, "conv2 dW"),
    (288, 25088, 64, True, False, "conv2 dcol"),
    (128, 128, 3136, False, True, "dense1 fwd"),
    (128, 3136, 128, False, False, "dense1 dx"),
    (128, 3136, 128, True, False, "dense1 dW"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="128,256,512,1024,2048", help="square sizes n (comma list)")
    p.add_argument("--threads", default=None, help="thread counts (comma list; default: 1 and all cores)")
    p.add_argument("--repeat", type=int, default=0, help="timed calls per case (default: enough for ~0.5 s, 5..50)")
    p.add_argument("--isa", default="auto", help="GEMM micro-kernel: auto, avx512, avx2, generic")
    p.add_argument("--cnn", action="store_true", help="also time the CNN's GEMM shapes")
    p.add_argument("--no-numpy", action="store_true", help="skip the NumPy comparison")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)  # internal: one thread count
    return p.parse_args(argv)


def median_seconds(fn, repeat):
    # Start from idle cores: OpenBLAS's worker threads keep spinning for a while
    # (about 2^28 cycles) after a call returns, and on a 2-core machine they took
    # the cores from whichever library was timed next (measured: gpuaccel's
    # dense shapes at 55 GF/s right after NumPy, 170-200 alone). Both sides wait.
    time.sleep(0.25)
    fn()  # warm-up: packing buffers, thread pools, page faults
    times = []
    deadline = time.perf_counter() + 0.5
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if repeat and len(times) >= repeat:
            break
        if not repeat and len(times) >= 5 and (time.perf_counter() > deadline or len(times) >= 50):
            break
    times.sort()
    return times[len(times) // 2]


def run_child(args):
    import numpy as np

    import gpuaccel as ga
    from gpuaccel import _C

    ga.set_num_threads(args.child)
    if args.isa != "auto":
        _C.set_gemm_isa(args.isa)
    rng = np.random.default_rng(0)
    cases = [(n, n, n, False, False, f"square {n}") for n in (int(s) for s in args.sizes.split(",") if s)]
    if args.cnn:
        cases += CNN_SHAPES
    print(f"threads={args.child}  gemm isa={_C.gemm_isa()}  numpy {np.__version__}")
    print(f"{'case':<28} {'gpuaccel GF/s':>14} {'numpy GF/s':>11} {'ratio':>6}")
    for m, n, k, ta, tb, what in cases:
        a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
        flops = 2.0 * m * n * k
        t_ga = median_seconds(lambda: ga.ops.matmul(a, b, trans_a=ta, trans_b=tb), args.repeat)
        label = f"{what} ({m}x{n}x{k}{' tA' if ta else ''}{' tB' if tb else ''})" if not what.startswith("square") else what
        if args.no_numpy:
            print(f"{label:<28} {flops / t_ga / 1e9:>14.1f}")
            continue
        # NumPy's transposed views go to BLAS as transposed operands, no copies.
        op_a, op_b = (a.T if ta else a), (b.T if tb else b)
        t_np = median_seconds(lambda: op_a @ op_b, args.repeat)
        print(f"{label:<28} {flops / t_ga / 1e9:>14.1f} {flops / t_np / 1e9:>11.1f} {t_np / t_ga:>6.2f}")
    sys.stdout.flush()


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        run_child(args)
        return 0
    cores = os.cpu_count() or 1
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cores})
    print(f"GEMM benchmark: {os.uname().machine}, {cores} logical CPUs; GFLOP/s = 2mnk / median time")
    for t in threads:
        env = dict(os.environ, **{v: str(t) for v in THREAD_VARS})
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(t), "--sizes", args.sizes,
               "--repeat", str(args.repeat), "--isa", args.isa]
        cmd += ["--cnn"] if args.cnn else []
        cmd += ["--no-numpy"] if args.no_numpy else []
        print()
        r = subprocess.run(cmd, env=env)
        if r.returncode != 0:
            print(f"(threads={t}: child exited with {r.returncode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
