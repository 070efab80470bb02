"""GPU SGEMM: gpuaccel's hand-written CUDA kernel against cuBLAS, square sizes and
the reference CNN's own GEMM shapes; then TF32 on tensor cores: the hand-written WMMA
kernel (ops.matmul(..., precision='tf32')) against cuBLAS TF32, square sizes.

    python benchmarks/bench_gemm_cuda.py                    # n = 256 .. 4096 + CNN shapes + TF32
    python benchmarks/bench_gemm_cuda.py --sizes 1024 --no-cnn --json out.json
    python benchmarks/bench_gemm_cuda.py --no-tf32          # fp32 only
    python benchmarks/bench_gemm_cuda.py --sizes 64 --no-cnn --tf32-sizes 64   # the CUDA emulator

Operands live on the GPU (ga.tensor(..., device='cuda')) so no copy is timed. Each
figure is 2*m*n*k / (wall time of `--repeat` back-to-back calls / repeat), the
clock read only after ga.cuda.synchronize(), after one warm-up call; every call
also allocates its output on the device, the same for both kernels. "% of peak"
is against the best cuBLAS figure of the run (DESIGN.md: the GPU's measured peak).
The maximum relative difference between the two results is printed too. The TF32
table has the same columns (its peak: the best cuBLAS TF32 figure); a GPU below
compute capability 8.0 has no TF32 tensor cores and reports the refusal instead.
On the CUDA emulator (a CPU build for tests) the figures are the CPU's, not a GPU's.
Benchmarks never assert: this only prints (and writes --json).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

# The reference CNN's GEMMs at batch 128: (m, n, k, trans_a, trans_b, what).
CNN_SHAPES = [
    (32, 100352, 9, False, False, "conv1 fwd"),
    (32, 9, 100352, False, True, "conv1 dW"),
    (64, 25088, 288, False, False, "conv2 fwd"),
    (64, 288, 25088, False, True, "conv2 dW"),
    (288, 25088, 64, True, False, "conv2 dcol"),
    (128, 128, 3136, False, True, "dense1 fwd"),
    (128, 3136, 128, False, False, "dense1 dx"),
    (128, 3136, 128, True, False, "dense1 dW"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="256,512,1024,2048,4096", help="square sizes n (comma list)")
    p.add_argument("--repeat", type=int, default=0, help="timed calls per case (default: ~0.3 s worth, 3..200)")
    p.add_argument("--no-cnn", action="store_true", help="skip the CNN's GEMM shapes")
    p.add_argument("--ref", action="store_true", help="also time the one-thread-per-output reference kernel")
    p.add_argument("--tf32-sizes", default="1024,2048,4096,8192",
                   help="square sizes n of the TF32 comparison (comma list)")
    p.add_argument("--no-tf32", action="store_true", help="skip the TF32 comparison")
    p.add_argument("--json", help="write the rows to this JSON file")
    return p.parse_args(argv)


def time_call(ga, fn, repeat):
    """Seconds per call: warm-up, then `repeat` calls (or enough for ~0.3 s) between syncs."""
    fn()
    ga.cuda.synchronize()
    if not repeat:
        t0 = time.perf_counter()
        fn()
        ga.cuda.synchronize()
        one = max(time.perf_counter() - t0, 1e-6)
        repeat = int(min(200, max(3, 0.3 / one)))
    keep = []  # results stay alive until the clock stops: no frees inside the loop
    t0 = time.perf_counter()
    for _ in range(repeat):
        keep.append(fn())
    ga.cuda.synchronize()
    dt = (time.perf_counter() - t0) / repeat
    del keep
    return dt


def run_case(ga, m, n, k, ta, tb, what, args, rng, precision="fp32"):
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    da, db = ga.tensor(a, device="cuda"), ga.tensor(b, device="cuda")
    flop = 2.0 * m * n * k
    row = {"case": what, "m": m, "n": n, "k": k, "trans_a": ta, "trans_b": tb, "precision": precision}
    outs = {}
    kernels = ["auto", "cublas"] + (["ref"] if args.ref and flop <= 2 * 1024**3 else [])
    for kern in kernels:
        def fn(kern=kern):
            return ga.ops.matmul(da, db, trans_a=ta, trans_b=tb, device="cuda", kernel=kern, precision=precision)
        try:
            dt = time_call(ga, fn, args.repeat)
            row[f"{kern}_gflops"] = flop / dt / 1e9
            row[f"{kern}_ms"] = dt * 1e3
            outs[kern] = fn().numpy()
        except Exception as e:  # report and go on: benchmarks never stop on one case
            row[f"{kern}_error"] = f"{type(e).__name__}: {e}"
    if "auto" in outs and "cublas" in outs:
        rs = slice(0, min(m, 64))  # a sample of rows keeps the float64 check quick
        ref = outs["cublas"][rs].astype(np.float64)
        opa, opb = (a.T if ta else a)[rs], (b.T if tb else b)
        scale = np.abs(opa).astype(np.float64) @ np.abs(opb).astype(np.float64)
        row["max_rel_diff"] = float(np.max(np.abs(outs["auto"][rs] - ref) / np.maximum(scale, 1e-30)))
    return row


def main(argv=None):
    args = parse_args(argv)
    try:
        import gpuaccel as ga
    except ImportError:  # run from a source tree that is not installed
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        import gpuaccel as ga

    if not ga.cuda.is_available():
        print(f"bench_gemm_cuda: CUDA unavailable: {ga.cuda.unavailable_reason()}")
        return 0
    props = ga.cuda.get_device_properties(0)
    v = ga.cuda.versions()
    print(f"GPU: {props['name']} (sm_{props['major']}{props['minor']}, {props['multiprocessors']} SMs), "
          f"CUDA runtime {v.get('runtime')}, driver {v.get('driver')}, cuBLAS {v.get('cublas')}; "
          f"binary: {' '.join(ga.cuda.compiled_archs())}")
    emulated = bool(ga.cuda.is_emulated())
    if emulated:
        print("NOTE: this is the CUDA emulator (a CPU build for tests): the figures below are the "
              "CPU's, not a GPU's, and say nothing about GPU speed")
    rng = np.random.default_rng(0)
    cases = [(s, s, s, False, False, f"square {s}") for s in (int(x) for x in args.sizes.split(",") if x)]
    if not args.no_cnn:
        cases += CNN_SHAPES
    rows = []
    for m, n, k, ta, tb, what in cases:
        rows.append(run_case(ga, m, n, k, ta, tb, what, args, rng))
        r = rows[-1]
        print(f"  {what:<12} done: auto {r.get('auto_gflops', float('nan')):.0f}, "
              f"cublas {r.get('cublas_gflops', float('nan')):.0f} GFLOP/s", flush=True)
    print_table(f"SGEMM on {props['name']}", rows)
    tf32_rows = []
    if not args.no_tf32:
        print(f"\nTF32 (tensor cores): hand-written WMMA kernel against cuBLAS TF32", flush=True)
        for s in (int(x) for x in args.tf32_sizes.split(",") if x):
            tf32_rows.append(run_case(ga, s, s, s, False, False, f"tf32 {s}", args, rng, precision="tf32"))
            r = tf32_rows[-1]
            print(f"  tf32 {s:<7} done: auto {r.get('auto_gflops', float('nan')):.0f}, "
                  f"cublas {r.get('cublas_gflops', float('nan')):.0f} GFLOP/s", flush=True)
        print_table(f"TF32 GEMM on {props['name']}", tf32_rows)
    if args.ref:
        for r in rows + tf32_rows:
            if "ref_gflops" in r:
                print(f"  ref kernel, {r['case']}: {r['ref_gflops']:.0f} GFLOP/s")
    if args.json:
        peak = max([r.get("cublas_gflops", 0.0) for r in rows] + [1e-9])
        with open(args.json, "w") as f:
            json.dump({"device": props, "versions": v, "archs": ga.cuda.compiled_archs(),
                       "emulated": emulated, "peak_gflops": peak, "rows": rows, "tf32_rows": tf32_rows}, f,
                      indent=1)
    return 0


def print_table(title, rows):
    """GFLOP/s of the hand-written kernel and cuBLAS per case, their ratio and the share
    of the best cuBLAS figure of these rows."""
    peak = max([r.get("cublas_gflops", 0.0) for r in rows] + [1e-9])
    print(f"\n{title}: GFLOP/s (peak = best cuBLAS figure, {peak:.0f} GFLOP/s)")
    hdr = f"{'case':<13}{'m':>7}{'n':>8}{'k':>8} {'op':>3} {'hand':>9} {'cuBLAS':>9} {'hand/cuBLAS':>12} {'% peak':>7} {'max rel diff':>13}"
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        op = ("T" if r["trans_a"] else "N") + ("T" if r["trans_b"] else "N")
        hand, cub = r.get("auto_gflops"), r.get("cublas_gflops")
        ratio = f"{hand / cub:.2f}" if hand and cub else "-"
        pct = f"{100 * hand / peak:.0f}%" if hand else "-"
        diff = f"{r['max_rel_diff']:.1e}" if "max_rel_diff" in r else "-"
        fmt = lambda x: (f"{x:9.0f}" if x >= 10 else f"{x:9.2f}") if x else f"{'error':>9}"
        print(f"{r['case']:<13}{r['m']:>7}{r['n']:>8}{r['k']:>8} {op:>3} {fmt(hand)} {fmt(cub)} {ratio:>12} {pct:>7} {diff:>13}")
        for key in ("auto_error", "cublas_error", "ref_error"):
            if key in r:
                print(f"    {key}: {r[key]}")


if __name__ == "__main__":
    sys.exit(main())
