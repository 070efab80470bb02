"""GEMM: every CPU micro-kernel this machine can run (avx512, avx2, generic) and the
reference loops, against a float64 NumPy product.

Shapes are picked to hit the driver's awkward paths: sizes below, at and just past the
micro-tile (MR x NR = 8x32, 6x16, 4x8), k past the KC block (256-384), m past the MC
block (~336), n past the NC block (4096), single rows and columns, all four transposes,
alpha/beta, k = 0, and the CNN's own GEMM shapes. Tolerance: rtol_for(k) (1e-4 growing
with sqrt(k)) against |a| @ |b|, so cancellation cannot make a test flaky.
"""
import numpy as np
import pytest

import gpuaccel as ga
from gpuaccel import _C, ops

from conftest import assert_close, assert_matches_cpu, f32, rtol_for, run_on

ISAS = ["avx512", "avx2", "generic"]

# (m, n, k)
SHAPES = [
    (1, 1, 1),
    (1, 1, 7),
    (2, 3, 4),
    (7, 13, 5),
    (8, 32, 16),      # exactly one AVX-512 tile
    (9, 33, 17),      # one past it in every direction
    (6, 16, 300),     # one AVX2 tile, k past KC
    (17, 31, 257),
    (64, 64, 64),
    (100, 1, 50),     # column vector out
    (1, 100, 50),     # row vector out
    (129, 127, 385),  # nothing a multiple of anything, k spans two KC blocks
    (400, 40, 20),    # m past MC
    (5, 4200, 3),     # n past NC
]

# The CNN's GEMMs at batch 128 (m, n, k, trans_a, trans_b).
CNN_SHAPES = [
    (32, 100352, 9, False, False),    # conv1 forward
    (64, 25088, 288, False, False),   # conv2 forward
    (64, 288, 25088, False, True),    # conv2 dW
    (288, 25088, 64, True, False),    # conv2 d(col)
    (128, 128, 3136, False, True),    # dense1 forward
    (128, 3136, 128, False, False),   # dense1 dx
    (128, 3136, 128, True, False),    # dense1 dW
]

TRANS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.fixture(params=ISAS)
def isa(request):
    """Force one micro-kernel for the test; skip where this CPU cannot run it."""
    before = _C.gemm_isa()
    try:
        _C.set_gemm_isa(request.param)
    except ValueError as e:
        pytest.skip(f"GEMM ISA {request.param!r} unavailable here: {e}")
    assert _C.gemm_isa() == request.param
    yield request.param
    _C.set_gemm_isa(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """The driver splits work differently with one thread and with several."""
    before = ga.get_num_threads()
    ga.set_num_threads(request.param)
    yield request.param
    ga.set_num_threads(before)


def operands(rng, m, n, k, ta, tb):
    a = f32(rng.standard_normal((k, m) if ta else (m, k)))
    b = f32(rng.standard_normal((n, k) if tb else (k, n)))
    return a, b


def reference(a, b, ta, tb, alpha=1.0, beta=0.0, c=None):
    """float64 product and the magnitude its rounding error scales with."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    op_a, op_b = (a64.T if ta else a64), (b64.T if tb else b64)
    ref = alpha * (op_a @ op_b)
    absref = abs(alpha) * (np.abs(op_a) @ np.abs(op_b))
    if c is not None and beta != 0.0:
        ref = ref + beta * c.astype(np.float64)
        absref = absref + abs(beta) * np.abs(c.astype(np.float64))
    return ref, absref


@pytest.mark.parametrize("ta,tb", TRANS, ids=["nn", "tn", "nt", "tt"])
@pytest.mark.parametrize("m,n,k", SHAPES, ids=[f"{m}x{n}x{k}" for m, n, k in SHAPES])
def test_gemm_shapes(isa, rng, m, n, k, ta, tb):
    a, b = operands(rng, m, n, k, ta, tb)
    out = ops.matmul(a, b, trans_a=ta, trans_b=tb, device="cpu")
    ref, absref = reference(a, b, ta, tb)
    assert_close(out, ref, absref, rtol_for(k), what=f"gemm[{isa}] {m}x{n}x{k} ta={ta} tb={tb}")


@pytest.mark.parametrize("m,n,k", [(7, 13, 5), (33, 70, 300), (129, 127, 385)])
def test_gemm_threads(isa, threads, rng, m, n, k):
    for ta, tb in TRANS:
        a, b = operands(rng, m, n, k, ta, tb)
        ref, absref = reference(a, b, ta, tb)
        assert_close(ops.matmul(a, b, trans_a=ta, trans_b=tb), ref, absref, rtol_for(k),
                     what=f"gemm[{isa}, {threads} threads] ta={ta} tb={tb}")


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, -2.0), (-1.5, 0.25), (2.0, 0.0), (0.0, 3.0)])
@pytest.mark.parametrize("m,n,k", [(9, 33, 17), (70, 45, 300)])
def test_gemm_alpha_beta(isa, rng, m, n, k, alpha, beta):
    for ta, tb in TRANS:
        a, b = operands(rng, m, n, k, ta, tb)
        c = f32(rng.standard_normal((m, n)))
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=alpha, beta=beta, c=c)
        ref, absref = reference(a, b, ta, tb, alpha, beta, c)
        assert_close(out, ref, absref, rtol_for(k), atol=1e-30,
                     what=f"gemm[{isa}] alpha={alpha} beta={beta} ta={ta} tb={tb}")


def test_gemm_beta_zero_drops_nan(isa, rng):
    """beta == 0 overwrites c: NaN or Inf already there must not leak into the result."""
    a, b = operands(rng, 19, 37, 11, False, False)
    c = np.full((19, 37), np.nan, np.float32)
    c[::2] = np.inf
    out = ops.matmul(a, b, beta=0.0, c=c)
    ref, absref = reference(a, b, False, False)
    assert_close(out, ref, absref, rtol_for(11), what=f"gemm[{isa}] beta=0 over NaN")


def test_gemm_k_zero(isa):
    """k == 0: the product is empty, so c = beta * c (zeros when no c)."""
    a = np.zeros((4, 0), np.float32)
    b = np.zeros((0, 6), np.float32)
    np.testing.assert_array_equal(ops.matmul(a, b), np.zeros((4, 6), np.float32))
    c = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(ops.matmul(a, b, beta=0.5, c=c), 0.5 * c)


def test_gemm_empty_output(isa):
    assert ops.matmul(np.zeros((0, 5), np.float32), np.zeros((5, 3), np.float32)).shape == (0, 3)
    assert ops.matmul(np.zeros((4, 5), np.float32), np.zeros((5, 0), np.float32)).shape == (4, 0)


def test_gemm_strided_views(isa, rng):
    """Views into wider arrays (row stride > width) give the same product."""
    big_a = f32(rng.standard_normal((50, 80)))
    big_b = f32(rng.standard_normal((60, 90)))
    a, b = big_a[3:40, 5:58], big_b[1:54, 7:71]  # (37, 53) @ (53, 64)
    ref, absref = reference(np.ascontiguousarray(a), np.ascontiguousarray(b), False, False)
    assert_close(ops.matmul(a, b), ref, absref, rtol_for(53), what=f"gemm[{isa}] strided views")


@pytest.mark.parametrize("m,n,k,ta,tb", CNN_SHAPES, ids=[f"{s[0]}x{s[1]}x{s[2]}{'T' if s[3] else 'N'}{'T' if s[4] else 'N'}"
                                                           for s in CNN_SHAPES])
def test_gemm_cnn_shapes(isa, rng, m, n, k, ta, tb):
    if isa == "generic" and m * n * k > 50_000_000:
        pytest.skip("portable kernel: the big CNN shapes are covered by the SIMD kernels")
    a, b = operands(rng, m, n, k, ta, tb)
    ref, absref = reference(a, b, ta, tb)
    assert_close(ops.matmul(a, b, trans_a=ta, trans_b=tb), ref, absref, rtol_for(k),
                 what=f"gemm[{isa}] CNN {m}x{n}x{k}")


@pytest.mark.parametrize("ta,tb", TRANS, ids=["nn", "tn", "nt", "tt"])
def test_gemm_ref_kernel(rng, ta, tb):
    """The reference loops are the yardstick for the fast path; check them too."""
    for m, n, k in [(1, 1, 1), (9, 33, 17), (70, 45, 300)]:
        a, b = operands(rng, m, n, k, ta, tb)
        c = f32(rng.standard_normal((m, n)))
        ref, absref = reference(a, b, ta, tb, 0.5, -1.0, c)
        out = ops.matmul(a, b, trans_a=ta, trans_b=tb, alpha=0.5, beta=-1.0, c=c, kernel="ref")
        assert_close(out, ref, absref, rtol_for(k), what=f"gemm ref {m}x{n}x{k}")


def test_gemm_fast_matches_ref(isa, rng):
    a, b = operands(rng, 77, 91, 333, False, True)
    fast = ops.matmul(a, b, trans_b=True)
    slow = ops.matmul(a, b, trans_b=True, kernel="ref")
    _, absref = reference(a, b, False, True)
    assert_close(fast, slow.astype(np.float64), absref, rtol_for(333), what=f"gemm[{isa}] fast vs ref")


def test_gemm_isa_names():
    assert _C.gemm_isa() in ISAS
    before = _C.gemm_isa()
    try:
        with pytest.raises(ValueError):
            _C.set_gemm_isa("sse9")
        assert _C.gemm_isa() == before  # a failed switch changes nothing
        _C.set_gemm_isa("generic")      # always built, runs anywhere
        assert _C.gemm_isa() == "generic"
        _C.set_gemm_isa("auto")
        assert _C.gemm_isa() in ISAS
    finally:
        _C.set_gemm_isa(before)


@pytest.mark.parametrize("m,n,k,ta,tb", [(9, 33, 17, False, False), (129, 127, 385, True, False),
                                         (64, 288, 2000, False, True), (70, 45, 300, True, True)])
def test_gemm_devices_agree(device, rng, m, n, k, ta, tb):
    """Same shapes on every device: GPU results match the CPU to about 1e-4."""
    a, b = operands(rng, m, n, k, ta, tb)
    out, cpu = run_on(device, ops.matmul, a, b, trans_a=ta, trans_b=tb)
    ref, absref = reference(a, b, ta, tb)
    assert_close(out, ref, absref, rtol_for(k), what=f"gemm on {device}")
    if cpu is not None:
        assert_matches_cpu(out, cpu, absref, what=f"gemm on {device}")
