"""The data-parallel study (issue 16): `python -m gpuaccel.bench --ranks 1,2`.

For each process count R it launches itself under `mpirun -np R` (one thread per
process unless --threads): every rank trains the reference CNN at a global batch
of --batch-size (weak per-rank work: batch / R each) on synthetic Fashion-MNIST-
shaped data for a warm-up epoch and a timed one, and reports the global images/s,
the time spent in the gradient allreduce per step (measured around the reducer)
and, with R >= 2, an allreduce sweep (4 B to 16 MiB) fitted to the ring model
t = 2 (R-1) alpha + 2 (R-1)/R * bytes / beta. Scaling efficiency is
images/s(R) / (R * images/s(1)) at the same global batch (strong scaling: each
rank does 1/R of the work, so efficiency 1 means an R-fold speed-up).

predict() is the alpha-beta model used in benchmarks/RESULTS.md:
efficiency(R) = t_compute / (t_compute + t_allreduce(R)), no overlap of the
allreduce with backward (the reducer runs after it)."""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REFERENCE_GRAD_BYTES = 421642 * 4  # the reference CNN's parameter block (1.69 MB)


def ring_time(ranks, nbytes, alpha, beta):
    """Seconds for a ring allreduce of nbytes over `ranks` (alpha: s per message, beta: bytes/s)."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / beta


def tree_time(ranks, nbytes, alpha, beta):
    """The latency-optimal variant (NCCL's trees, recursive doubling): 2 log2(R) alpha + the ring's bandwidth term."""
    if ranks <= 1:
        return 0.0
    return 2 * math.log2(ranks) * alpha + 2 * (ranks - 1) / ranks * nbytes / beta


def predict(compute_s, ranks, nbytes, alpha, beta, tree=False):
    """Scaling efficiency of a data-parallel step: compute / (compute + allreduce)."""
    t = (tree_time if tree else ring_time)(ranks, nbytes, alpha, beta)
    return compute_s / (compute_s + t)


def fit_alpha_beta(sizes, times, ranks):
    """Least squares of t = 2 (R-1) alpha + 2 (R-1)/R * bytes / beta on the sweep; (alpha s, beta bytes/s)."""
    a = np.stack([np.full(len(sizes), 2.0 * (ranks - 1)), 2.0 * (ranks - 1) / ranks * np.asarray(sizes, float)], 1)
    # relative errors: weight each point by 1/t so the small messages set alpha
    w = 1.0 / np.asarray(times)
    coef, *_ = np.linalg.lstsq(a * w[:, None], np.asarray(times) * w, rcond=None)
    alpha, inv_beta = float(coef[0]), float(coef[1])
    return max(alpha, 0.0), (1.0 / inv_beta if inv_beta > 0 else float("inf"))


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


# ---------------------------------------------------------------------------
# the worker (one per rank, under mpirun)
# ---------------------------------------------------------------------------
def worker(args):
    import gpuaccel as ga
    from gpuaccel import distributed as dist
    from gpuaccel import models

    ga.set_num_threads(args.threads)
    r, world = dist.init()
    rng = np.random.default_rng(args.seed)
    n = args.steps * args.batch_size
    x = rng.random((n, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    m = models.reference_cnn(seed=args.seed)
    m.compile("adam")
    if args.independent:  # the control: each rank trains its share alone, no communication
        share = args.batch_size // world
        xs, ys = x[:args.steps * share], y[:args.steps * share]
        m.fit(xs, ys, batch_size=share, epochs=1, verbose=0, distributed=False)
        dist.barrier()
        t0 = time.perf_counter()
        m.fit(xs, ys, batch_size=share, epochs=1, verbose=0, distributed=False)
        seconds = allmax(time.perf_counter() - t0)
        if r == 0:
            with open(args.worker_out, "w") as f:
                json.dump({"ranks": world, "independent_step_ms": 1000 * seconds / args.steps}, f)
        return
    m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)  # warm-up: buffers, 'auto' kernels
    dist.reducer_stats(reset=True)
    dist.barrier()
    t0 = time.perf_counter()
    m.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)
    dist.barrier()
    seconds = time.perf_counter() - t0
    calls, nbytes, red_s = dist.reducer_stats()
    out = {"ranks": world, "images_per_s": n / seconds, "step_ms": 1000 * seconds / args.steps,
           "allreduce_ms_per_step": 1000 * red_s / max(calls, 1), "grad_bytes": nbytes // max(calls, 1),
           "threads_per_rank": args.threads}
    if world > 1:  # the alpha-beta sweep: blocking-equivalent allreduce of floats, median of reps
        sweep = []
        dist._mpi().allreduce(np.zeros(1024, np.float32), "sum")  # first-call setup out of the sweep
        for nb in [4 << k for k in range(0, 23, 2)]:
            buf = np.zeros(nb // 4, np.float32)
            reps = 20 if nb < (1 << 20) else 5
            ts = []
            for _ in range(reps):
                dist.barrier()
                s0 = time.perf_counter()
                dist._mpi().allreduce(buf, "sum")
                ts.append(time.perf_counter() - s0)
            sweep.append((nb, allmax(float(np.min(ts))), allmax(float(np.median(ts)))))
        # fitted on the fastest repetition (the cost without a descheduled peer); medians kept beside
        alpha, beta = fit_alpha_beta([s[0] for s in sweep], [s[1] for s in sweep], world)
        alpha_med, beta_med = fit_alpha_beta([s[0] for s in sweep], [s[2] for s in sweep], world)
        out.update(sweep=sweep, alpha_s=alpha, beta_bytes_per_s=beta, alpha_median_s=alpha_med,
                   beta_median_bytes_per_s=beta_med)
    if r == 0:
        with open(args.worker_out, "w") as f:
            json.dump(out, f)


def allmax(v):
    from gpuaccel import distributed as dist

    return float(dist.allreduce(np.array([v]), "max")[0])


# ---------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------
def run(ranks, batch_size=128, steps=60, threads=1, seed=0, out="bench-out", timeout=900):
    """Launches the worker for each process count; returns the report (dict) and writes
    OUT/distributed.json and OUT/distributed.md."""
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        raise RuntimeError("mpirun not found: install openmpi-bin libopenmpi-dev (make deps)")
    from gpuaccel import distributed as dist

    if not dist.available():
        raise RuntimeError(dist.unavailable_reason())
    os.makedirs(out, exist_ok=True)
    rows = []
    for R in ranks:
        path = os.path.join(out, f"distributed-{R}.json")
        cmd = [mpirun, "-np", str(R), "--oversubscribe", "--bind-to", "none"]
        if os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
        cmd += [sys.executable, "-m", "gpuaccel.dist_bench", "--worker", "--worker-out", path, "--steps", str(steps),
                "--batch-size", str(batch_size), "--threads", str(threads), "--seed", str(seed)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        before = _load()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        after = _load()
        if res.returncode != 0:
            raise RuntimeError(f"mpirun -np {R} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
        with open(path) as f:
            row = json.load(f)
        row.update(load_before=before, load_after=after)
        if R > 1:  # the same CPU sharing without communication: R processes training B / R alone
            res = subprocess.run(cmd + ["--independent"], env=env, capture_output=True, text=True, timeout=timeout)
            if res.returncode != 0:
                raise RuntimeError(f"mpirun -np {R} (independent) failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
            with open(path) as f:
                row["independent_step_ms"] = json.load(f)["independent_step_ms"]
            with open(path, "w") as f:
                json.dump(row, f)
        rows.append(row)
    base = next((r["images_per_s"] for r in rows if r["ranks"] == 1), None)
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["ranks"] * base) if base else None
    report = {"batch_size": batch_size, "steps": steps, "threads_per_rank": threads, "rows": rows,
              "note": "synthetic 1x28x28 data, reference CNN, Adam, global batch split over the ranks"}
    with open(os.path.join(out, "distributed.json"), "w") as f:
        json.dump(report, f, indent=1)
    lines = [f"reference CNN, global batch {batch_size}, {steps} timed steps, {threads} thread(s) per process",
             "", "| processes | images/s | step ms | allreduce ms/step | efficiency | B/R alone, no MPI: step ms "
             "| load before/after |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        eff = f"{r['efficiency']:.2f}" if r["efficiency"] is not None else "-"
        ind = f"{r['independent_step_ms']:.1f}" if "independent_step_ms" in r else "-"
        lines.append(f"| {r['ranks']} | {r['images_per_s']:.0f} | {r['step_ms']:.1f} | "
                     f"{r['allreduce_ms_per_step']:.2f} | {eff} | {ind} | {r['load_before']:.2f} / "
                     f"{r['load_after']:.2f} |")
    for r in rows:
        if "alpha_s" in r:
            lines.append(f"\nallreduce sweep at {r['ranks']} processes (ring model fit): fastest of the repetitions "
                         f"alpha = {1e6 * r['alpha_s']:.1f} us, beta = {r['beta_bytes_per_s'] / 1e9:.2f} GB/s; "
                         f"medians alpha = {1e6 * r['alpha_median_s']:.1f} us, "
                         f"beta = {r['beta_median_bytes_per_s'] / 1e9:.2f} GB/s")
            lines.append("| bytes | fastest us | median us |\n|---|---|---|")
            lines += [f"| {b} | {1e6 * t:.1f} | {1e6 * m:.1f} |" for b, t, m in r["sweep"]]
            step1 = next((x["step_ms"] for x in rows if x["ranks"] == 1), None)
            if step1:
                pred = predict(step1 / 1000 / r["ranks"], r["ranks"], r["grad_bytes"], r["alpha_s"],
                               r["beta_bytes_per_s"])
                lines.append(f"model: efficiency at {r['ranks']} = {pred:.2f} (compute = 1-process step / "
                             f"{r['ranks']}); measured {r['efficiency']:.2f}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "distributed.md"), "w") as f:
        f.write(text)
    print(text)
    return report


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m gpuaccel.dist_bench", description=__doc__.split("\n")[0])
    p.add_argument("--ranks", default="1,2")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--independent", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    run([int(v) for v in args.ranks.split(",")], args.batch_size, args.steps, args.threads, args.seed, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
