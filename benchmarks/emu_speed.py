"""Throughput of the CUDA emulator (sizing the CI runs; never a GPU timing): a reference-CNN
training step at batch 128, the tiled SGEMM of the second conv's forward (64 x 25088 x 288)
and a 4M-element ReLU, one emulated thread per element. Run it against an emulated build:

    GPUACCEL_CUDA_EMU=1 python setup.py build_ext --inplace && python benchmarks/emu_speed.py
"""
import sys
import time

import numpy as np

import gpuaccel as ga


def best_of(n, fn):
    fn()  # warm-up
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    if not ga.cuda.is_emulated():
        sys.exit("not an emulated build: GPUACCEL_CUDA_EMU=1 python setup.py build_ext --inplace")
    (x, y), _ = ga.datasets.fashion_mnist.load_data()
    x = (x[:768] / 255.0).astype(np.float32)[:, None]
    y = y[:768].astype(np.int32)
    net = ga.models.reference_cnn(seed=0).compile(optimizer=ga.optimizers.Adam(1e-3), device="cuda")._net
    net.train_step(x[:128], y[:128])
    t0 = time.perf_counter()
    for i in range(1, 6):
        net.train_step(x[i * 128:(i + 1) * 128], y[i * 128:(i + 1) * 128])
    print(f"reference CNN step, batch 128: {(time.perf_counter() - t0) / 5:.2f} s (mean of 5)")

    rng = np.random.default_rng(0)
    a = ga.tensor(rng.random((64, 288), dtype=np.float32), device="cuda")
    b = ga.tensor(rng.random((288, 25088), dtype=np.float32), device="cuda")
    for kernel in ("auto", "ref", "cublas"):
        t = best_of(3, lambda: ga.ops.matmul(a, b, kernel=kernel).numpy())
        print(f"sgemm 64x25088x288 kernel={kernel}: {t:.3f} s, {2 * 64 * 288 * 25088 / t / 1e9:.2f} GFLOP/s")

    v = ga.tensor(rng.random(1 << 22, dtype=np.float32), device="cuda")
    t = best_of(3, lambda: ga.ops.relu(v).numpy())
    print(f"relu of 4,194,304 floats (one emulated thread each): {t:.3f} s, {t / (1 << 22) * 1e9:.0f} ns per thread")


if __name__ == "__main__":
    main()
