"""Shared fixtures and tolerances for the gpuaccel test suite.

- `device`: every op test runs once per device, 'cpu' and 'cuda'. The CUDA case skips,
  saying why (gpuaccel.cuda.unavailable_reason()), where no usable GPU is present. On the
  CUDA emulator (GPUACCEL_CUDA_EMU build) it runs: correctness is what the emulator checks.
- `real_gpu`: for the few tests only real hardware can answer (timings, the SASS compiled
  for the present GPU, driver versions): skips on the emulator as well, saying so.
- `GPUACCEL_TESTS=cuda` keeps only the tests that run CUDA code (the `device` fixture's
  'cuda' case, `cuda_device`, `real_gpu`, or 'cuda' in the test's id): `make test-cuda-emu`
  runs them on the emulator without repeating the CPU half of the suite.
- Tolerances: fp32 results are checked against float64 references elementwise with
  |out - ref| <= rtol * absref + atol, where absref is the same computation on absolute
  values (so cancellation does not make the test flaky) and rtol grows with the reduction
  length (1e-4 for short sums, up to 1e-3). Device results are checked against the CPU
  result to about 1e-4 relative.

The helpers below are imported by the test modules (`from conftest import ...`).
"""
import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

DEVICES = ["cpu", "cuda"]

# CUDA against CPU, both fp32 (DESIGN.md section 4: "about 1e-4 relative").
DEVICE_RTOL = 1e-4


def _cuda_skip_reason():
    """'' when CUDA can be used, else why not."""
    try:
        import gpuaccel
    except Exception as e:  # pragma: no cover - the package itself is broken
        return f"gpuaccel does not import: {e!r}"
    try:
        from gpuaccel import cuda
    except Exception as e:
        return f"gpuaccel.cuda is missing ({e!r})"
    try:
        if cuda.is_available():
            return ""
        reason = cuda.unavailable_reason()
    except Exception as e:
        return f"gpuaccel.cuda.is_available() failed: {e!r}"
    return f"CUDA unavailable: {reason or '(no reason given)'}"


def _runs_cuda(item):
    params = getattr(getattr(item, "callspec", None), "params", {})
    return (str(params.get("device", "")).startswith("cuda")
            or {"cuda_device", "real_gpu"} & set(getattr(item, "fixturenames", ()))
            or "cuda" in item.nodeid.lower())


def pytest_collection_modifyitems(config, items):
    if os.environ.get("GPUACCEL_TESTS", "").strip().lower() != "cuda":
        return
    keep = [it for it in items if _runs_cuda(it)]
    config.hook.pytest_deselected(items=[it for it in items if not _runs_cuda(it)])
    items[:] = keep


@pytest.fixture(autouse=True)
def _cpu_side_runs_im2col(request, monkeypatch):
    """A test that runs CUDA code checks the GPU's kernels against the CPU's: both devices
    run im2col under kernel='auto' (GPUACCEL_CONV_KERNEL), instead of whatever the CPU
    measured fastest here (Winograd's rounding differs by up to 1e-5, which twenty Adam
    steps amplify past the 1e-4 the device comparisons allow) and the GPU's implicit GEMM
    (its sums run in another order). tests/test_winograd.py sets the variable itself where
    it needs to; tests/test_conv_implicit.py asks for kernel='implicit' or clears it."""
    if _runs_cuda(request.node) and "test_winograd" not in request.node.nodeid:
        monkeypatch.setenv("GPUACCEL_CONV_KERNEL", "im2col")


@pytest.fixture(params=DEVICES)
def device(request):
    if request.param != "cpu":
        reason = _cuda_skip_reason()
        if reason:
            pytest.skip(reason)
    return request.param


@pytest.fixture
def cuda_device():
    """For tests that only make sense on a GPU."""
    reason = _cuda_skip_reason()
    if reason:
        pytest.skip(reason)
    return "cuda"


def cuda_emulated():
    """True when gpuaccel._cuda is the CPU emulator build (gpuaccel.cuda.is_emulated())."""
    try:
        from gpuaccel import cuda

        return bool(cuda.is_emulated())
    except Exception:
        return False


def emulator_skip_reason(what="it runs the kernels on the CPU: no GPU timings, no SASS, no driver"):
    """The skip message of a test that only real hardware can answer; `what` says why."""
    return f"needs a real GPU: the CUDA emulator cannot answer this ({what})"


@pytest.fixture
def real_gpu():
    """For tests that need a real GPU, not merely a working 'cuda' device."""
    reason = _cuda_skip_reason()
    if reason:
        pytest.skip(reason)
    if cuda_emulated():
        pytest.skip(emulator_skip_reason())
    return "cuda"


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST scaled to [0, 1] as (N, 1, 28, 28) float32: ((x, y), (x_test, y_test))."""
    import gpuaccel as ga

    try:
        (x, y), (xt, yt) = ga.datasets.fashion_mnist.load_data()
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"Fashion-MNIST not available: {e}")
    return ((x / 255.0).astype(np.float32)[:, None], y), ((xt / 255.0).astype(np.float32)[:, None], yt)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name, so each test sees fixed data."""
    seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(request.node.nodeid)) % (2**32)
    return np.random.default_rng(seed)


def cuda_available():
    return _cuda_skip_reason() == ""


# ----------------------------------------------------------------------------
# tolerances and comparisons
# ----------------------------------------------------------------------------


def rtol_for(reduction_length):
    """fp32 vs float64: 1e-4 for sums of up to 16 terms, growing as sqrt(length), capped at 1e-3."""
    return min(1e-3, 1e-4 * max(1.0, math.sqrt(max(reduction_length, 1) / 16.0)))


def to_numpy(r):
    """An op's result as a NumPy array (Tensors are copied back to the host)."""
    if isinstance(r, np.ndarray):
        return r
    if hasattr(r, "numpy"):
        return r.numpy()
    return np.asarray(r)


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def assert_close(actual, ref, absref=None, rtol=1e-4, atol=0.0, what="result", check_dtype=True):
    """|actual - ref| <= rtol * (absref + 1e-3 * max(absref)) + atol, elementwise.

    `absref` is the magnitude the error scales with (|x| @ |w| for a product, ...);
    it defaults to |ref|."""
    actual = to_numpy(actual)
    ref = np.asarray(ref, np.float64)
    if check_dtype:
        assert actual.dtype == np.float32, f"{what}: dtype {actual.dtype}, expected float32"
    assert actual.shape == ref.shape, f"{what}: shape {actual.shape}, expected {ref.shape}"
    if ref.size == 0:
        return
    scale = np.abs(ref) if absref is None else np.asarray(absref, np.float64)
    scale = np.broadcast_to(scale, ref.shape)
    bound = rtol * (scale + 1e-3 * float(scale.max())) + atol
    err = np.abs(actual.astype(np.float64) - ref)
    bad = ~(err <= bound)  # also catches NaN
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        worst = np.nanargmax(np.where(bad, err / np.maximum(bound, 1e-300), 0))
        widx = np.unravel_index(worst, ref.shape)
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {ref.size} elements out of tolerance (rtol={rtol:g}); "
            f"first at {idx}: got {actual[idx]!r}, expected {ref[idx]!r} (bound {bound[idx]:.3g}); "
            f"worst at {tuple(int(i) for i in widx)}: got {actual[widx]!r}, expected {ref[widx]!r}, "
            f"err {err[widx]:.3g} vs bound {bound[widx]:.3g}"
        )


def assert_matches_cpu(out, cpu, absref=None, rtol=DEVICE_RTOL, what="device result"):
    """A device's fp32 result against the CPU's fp32 result (about 1e-4 relative)."""
    assert_close(out, to_numpy(cpu).astype(np.float64), absref=absref, rtol=rtol, what=f"{what} vs cpu")


def run_on(device, fn, *args, **kwargs):
    """Run `fn(*args, device=device, **kwargs)`; on a GPU also run it on the CPU.

    Returns (result, cpu_result) where cpu_result is None when device is 'cpu'."""
    out = fn(*args, device=device, **kwargs)
    cpu = None if device == "cpu" else fn(*args, device="cpu", **kwargs)
    return out, cpu
