"""Kernel and training benchmarks: `pytest benchmarks` (pytest-benchmark).

Each case records GFLOP/s and the percentage of this machine's measured FP32 peak
(gpuaccel._C.cpu_peak_gflops, an FMA-throughput probe) in the benchmark's
extra_info, and NumPy's `a @ b` runs beside our GEMM at the same sizes so their
ratio comes from one run. Nothing here asserts a speed: benchmarks measure,
benchmarks/RESULTS.md records.
"""
import numpy as np
import pytest

import gpuaccel as ga

BATCH = 128
# (m, n, k, trans_a, trans_b) of the reference CNN's GEMMs at batch 128
CNN_GEMMS = {
    "conv1_fwd": (32, BATCH * 784, 9, False, False),
    "conv2_fwd": (64, BATCH * 196, 288, False, False),
    "conv2_dw": (64, 288, BATCH * 196, False, True),
    "conv2_dcol": (288, BATCH * 196, 64, True, False),
    "dense1_fwd": (BATCH, 128, 3136, False, True),
    "dense1_dx": (BATCH, 3136, 128, False, False),
    "dense1_dw": (128, 3136, BATCH, True, False),
}
# (C, H, W, K) of the reference CNN's convolutions (3x3, 'same')
CNN_CONVS = {"conv1": (1, 28, 28, 32), "conv2": (32, 14, 14, 64)}


@pytest.fixture(scope="session")
def peak():
    threads = ga.get_num_threads()
    gflops, isa = ga._C.cpu_peak_gflops(threads, 0.5)
    return {"peak_gflops": gflops, "peak_isa": isa, "threads": threads}


def record(benchmark, peak, flops, **extra):
    seconds = benchmark.stats.stats.median
    gflops = flops / seconds * 1e-9
    benchmark.extra_info.update(extra, gflops=round(gflops, 2), peak_gflops=round(peak["peak_gflops"], 1),
                                percent_of_peak=round(100 * gflops / peak["peak_gflops"], 1),
                                threads=peak["threads"])
    print(f"\n  {extra.get('what', '')}: {gflops:.1f} GFLOP/s = {100 * gflops / peak['peak_gflops']:.0f}% "
          f"of the measured peak {peak['peak_gflops']:.0f} GFLOP/s ({peak['threads']} threads)")


def operands(m, n, k, ta, tb, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    return a, b


@pytest.mark.parametrize("impl", ["gpuaccel", "numpy"])
@pytest.mark.parametrize("n", [128, 256, 512, 1024, 2048, 4096])
def test_gemm_square(benchmark, peak, n, impl):
    a, b = operands(n, n, n, False, False)
    f = (lambda: ga.ops.matmul(a, b)) if impl == "gpuaccel" else (lambda: a @ b)
    benchmark(f)
    record(benchmark, peak, 2.0 * n ** 3, what=f"{impl} sgemm n={n}", impl=impl, n=n)


@pytest.mark.parametrize("impl", ["gpuaccel", "numpy"])
@pytest.mark.parametrize("name", list(CNN_GEMMS))
def test_gemm_cnn_shapes(benchmark, peak, name, impl):
    m, n, k, ta, tb = CNN_GEMMS[name]
    a, b = operands(m, n, k, ta, tb)
    if impl == "gpuaccel":
        f = lambda: ga.ops.matmul(a, b, trans_a=ta, trans_b=tb)
    else:
        at, bt = (a.T if ta else a), (b.T if tb else b)
        f = lambda: at @ bt
    benchmark(f)
    record(benchmark, peak, 2.0 * m * n * k, what=f"{impl} {name} ({m}x{n}x{k})", impl=impl, shape=[m, n, k])


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("layer", list(CNN_CONVS))
def test_conv_layers(benchmark, peak, layer, direction):
    c, h, w, k = CNN_CONVS[layer]
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((k, c, 3, 3), dtype=np.float32)
    flops = 2.0 * BATCH * k * h * w * c * 9
    if direction == "forward":
        benchmark(lambda: ga.ops.conv2d(x, wt, padding=1))
    else:
        dy = rng.standard_normal((BATCH, k, h, w), dtype=np.float32)
        benchmark(lambda: ga.ops.conv2d_backward(x, wt, dy, padding=1))
        flops *= 2  # dW and dx
    record(benchmark, peak, flops, what=f"{layer} {direction} (batch {BATCH}, allocates its scratch per call)")


def test_training_epoch(benchmark, peak):
    """One epoch of the reference CNN on 6,400 Fashion-MNIST images (50 steps of 128)."""
    try:
        (x, y), _ = ga.datasets.fashion_mnist.load_data()
    except Exception as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    x = (x[:6400] / 255.0).astype(np.float32)[:, None]
    y = y[:6400]
    model = ga.models.reference_cnn(seed=0).compile(optimizer=ga.optimizers.Adam(1e-3))
    model.fit(x[:256], y[:256], epochs=1, batch_size=BATCH, verbose=0)  # warm-up: buffers, caches
    benchmark.pedantic(lambda: model.fit(x, y, epochs=1, batch_size=BATCH, verbose=0), rounds=3, iterations=1)
    # ~25 MFLOP per image per training step (DESIGN.md section 3)
    record(benchmark, peak, 25e6 * len(x), what="training epoch, 6,400 images",
           images_per_s=round(len(x) / benchmark.stats.stats.median, 1))
